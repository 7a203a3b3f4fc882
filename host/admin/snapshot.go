package admin

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/snapshot"
	"github.com/gorilla/mux"
)

// Snapshot routes (bearer token only, never a browser session):
//
//	POST /admin/backup                             every shard, one snapshot stream (edgeshard backup)
//	GET  /admin/bindings/{name}/shards/{id}/export one shard's snapshot stream
//	PUT  /admin/bindings/{name}/shards/{id}/import body: a one-shard stream, into this empty shard
//
// A stream is answered 200 application/octet-stream as it is written. An
// error before its first byte is a JSON error as usual; one after it can
// no longer change the status: the stream then lacks its end frame, which
// every reader refuses (snapshot.ErrCorrupt), and the trailer
// SnapshotErrorTrailer says what went wrong.

// SnapshotErrorTrailer is the HTTP trailer naming an error that cut a
// snapshot stream short.
const SnapshotErrorTrailer = "X-Edgeshard-Snapshot-Error"

// SnapshotContentType is the media type of a snapshot stream.
const SnapshotContentType = "application/vnd.edgeshard.snapshot"

func (s *Server) snapshotRoutes(r *mux.Router) {
	r.HandleFunc("/admin/backup", bearerOnly(s.backup)).Methods(http.MethodPost)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/export", bearerOnly(s.exportShard)).Methods(http.MethodGet)
	r.HandleFunc("/admin/bindings/{name}/shards/{id}/import", bearerOnly(s.importShard)).Methods(http.MethodPut)
}

// streamWriter starts a 200 stream at its first write, so that an error
// before it can still be answered as JSON.
type streamWriter struct {
	w       http.ResponseWriter
	started bool
	n       int64
}

func newStreamWriter(w http.ResponseWriter, filename string) *streamWriter {
	w.Header().Set("Trailer", SnapshotErrorTrailer)
	w.Header().Set("Content-Type", SnapshotContentType)
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", filename))
	return &streamWriter{w: w}
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	sw.started = true
	n, err := sw.w.Write(p)
	sw.n += int64(n)
	return n, err
}

// fail reports err: as a JSON error if nothing was sent, else in the trailer.
func (sw *streamWriter) fail(err error, status int, code string) {
	if !sw.started {
		sw.w.Header().Del("Trailer")
		sw.w.Header().Del("Content-Disposition")
		httpx.WriteError(sw.w, status, code, err.Error())
		return
	}
	sw.w.Header().Set(SnapshotErrorTrailer, err.Error())
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	log := s.log.With().Str("remote", r.RemoteAddr).Logger()
	sw := newStreamWriter(w, "edgeshard-"+t0.UTC().Format("20060102T150405Z")+".backup")
	bs, err := s.h.Backup(sw, "backup at "+t0.UTC().Format(time.RFC3339), nil)
	if err != nil {
		log.Error().Err(err).Int64("bytes", sw.n).Msg("backup failed")
		sw.fail(err, http.StatusInternalServerError, "backup_failed")
		return
	}
	log.Info().Int("shards", bs.Shards).Int("entries", bs.Entries).Int("alarms", bs.Alarms).Int64("bytes", sw.n).
		Dur("duration_ms", time.Since(t0)).Msg("backup streamed")
}

func (s *Server) exportShard(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	t0 := time.Now()
	sw := newStreamWriter(w, ns.Name()+"-"+shard+".snapshot")
	st, err := ns.ExportShard(r.Context(), shard, sw)
	log := s.log.With().Str("binding", ns.Name()).Str("shard", shard).Str("remote", r.RemoteAddr).Logger()
	if err != nil {
		log.Error().Err(err).Msg("shard export failed")
		status, code := host.ErrorStatus(err)
		sw.fail(err, status, code)
		return
	}
	log.Info().Int("entries", st.Entries).Int64("bytes", sw.n).Dur("duration_ms", time.Since(t0)).Msg("shard exported")
}

func (s *Server) importShard(w http.ResponseWriter, r *http.Request) {
	ns, shard, ok := s.namespaceShard(w, r)
	if !ok {
		return
	}
	// A shard's stream may take longer than the admin listener's
	// read_timeout allows a request body.
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	t0 := time.Now()
	st, err := ns.ImportShard(r.Context(), shard, r.Body)
	if err != nil {
		status, code := importErrorStatus(err)
		s.log.Warn().Err(err).Str("binding", ns.Name()).Str("shard", shard).Msg("shard import refused")
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, ImportResult{
		Binding: ns.Name(), Shard: shard, From: st.Shard.String(),
		Entries: st.Entries, Bytes: st.Bytes, Alarm: st.Alarm, Duration: time.Since(t0).String(),
	})
}

func importErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, storage.ErrNotEmpty):
		return http.StatusConflict, "shard_not_empty"
	case errors.Is(err, snapshot.ErrVersion):
		return http.StatusUnprocessableEntity, "snapshot_version"
	case errors.Is(err, snapshot.ErrUnknownSection):
		return http.StatusUnprocessableEntity, "snapshot_unknown_section"
	case errors.Is(err, snapshot.ErrCorrupt):
		return http.StatusBadRequest, "snapshot_corrupt"
	}
	return host.ErrorStatus(err)
}

// ImportResult is the answer of PUT /admin/bindings/{name}/shards/{id}/import.
type ImportResult struct {
	Binding string `json:"binding"`
	Shard   string `json:"shard"`
	// From is the shard the stream was taken from ("binding/shard").
	From    string `json:"from"`
	Entries int    `json:"entries"`
	Bytes   int64  `json:"bytes"`
	// Alarm is the imported alarm, unix ms; 0 when none.
	Alarm    int64  `json:"alarm,omitempty"`
	Duration string `json:"duration"`
}
