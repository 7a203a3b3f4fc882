package snapshot_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/storage/snapshot"
)

// stream writes a stream of two shards: one with a chunked section and an
// empty one, one with a section of bigLen bytes written through Write (in
// several chunks when longer than ChunkSize).
func stream(t testing.TB) []byte { return streamOf(t, 2*snapshot.ChunkSize+100) }

func streamOf(t testing.TB, bigLen int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := snapshot.NewWriter(&buf, snapshot.Header{TakenAt: 1234, Note: "test"})
	must(t, w.BeginShard(snapshot.ShardRef{Namespace: "NS", Name: "0"}))
	must(t, w.BeginSection("a"))
	must(t, w.Chunk([]byte("one")))
	must(t, w.Chunk([]byte("two")))
	must(t, w.EndSection())
	must(t, w.BeginSection("empty"))
	must(t, w.EndSection())
	must(t, w.EndShard())
	must(t, w.BeginShard(snapshot.ShardRef{Namespace: "NS", Name: "name\x00with\xffbytes"}))
	must(t, w.BeginSection("big"))
	big := bytes.Repeat([]byte("0123456789"), bigLen/10+1)[:bigLen]
	if _, err := w.Write(big[:7]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(big[7:]); err != nil {
		t.Fatal(err)
	}
	must(t, w.EndSection())
	must(t, w.EndShard())
	must(t, w.Close())
	return buf.Bytes()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// read reads a whole stream into a description, or fails.
func read(data []byte) (string, error) {
	r, err := snapshot.NewReader(bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	var out strings.Builder
	out.WriteString(r.Header().Note + "\n")
	for {
		ref, err := r.NextShard()
		if err == io.EOF {
			return out.String(), nil
		}
		if err != nil {
			return "", err
		}
		out.WriteString("shard " + ref.Namespace + "/" + ref.Name + "\n")
		for {
			name, err := r.NextSection()
			if err == io.EOF {
				break
			}
			if err != nil {
				return "", err
			}
			b, err := io.ReadAll(r)
			if err != nil {
				return "", err
			}
			out.WriteString(name + ":" + string(b[:min(len(b), 12)]) + "\n")
		}
	}
}

func TestRoundTrip(t *testing.T) {
	data := stream(t)
	got, err := read(data)
	if err != nil {
		t.Fatal(err)
	}
	want := "test\nshard NS/0\na:onetwo\nempty:\nshard NS/name\x00with\xffbytes\nbig:012345678901\n"
	if got != want {
		t.Fatalf("read %q\nwant %q", got, want)
	}
}

// TestChunksWhole: a reader's Chunk returns what the writer's Chunk wrote.
func TestChunksWhole(t *testing.T) {
	r, err := snapshot.NewReader(bytes.NewReader(stream(t)))
	must(t, err)
	if _, err := r.NextShard(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.NextSection(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"one", "two"} {
		c, err := r.Chunk()
		if err != nil || string(c) != want {
			t.Fatalf("Chunk = %q, %v; want %q", c, err, want)
		}
	}
	if _, err := r.Chunk(); err != io.EOF {
		t.Fatalf("Chunk at the section's end = %v; want io.EOF", err)
	}
}

// TestEveryTruncationRefused cuts a small stream at every length: each
// is refused with ErrCorrupt, never read as a shorter valid stream.
func TestEveryTruncationRefused(t *testing.T) {
	data := streamOf(t, 300)
	for n := 0; n < len(data); n++ {
		if _, err := read(data[:n]); !errors.Is(err, snapshot.ErrCorrupt) {
			t.Fatalf("stream cut at %d of %d bytes: err = %v; want ErrCorrupt", n, len(data), err)
		}
	}
}

// TestEveryByteFlipRefused flips one bit in each byte of a small stream:
// each is refused.
func TestEveryByteFlipRefused(t *testing.T) {
	data := streamOf(t, 300)
	for i := 0; i < len(data); i++ {
		bad := bytes.Clone(data)
		bad[i] ^= 0x10
		_, err := read(bad)
		if !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, snapshot.ErrVersion) {
			t.Fatalf("bit flipped at byte %d: err = %v; want ErrCorrupt", i, err)
		}
	}
}

func TestTrailingDataRefused(t *testing.T) {
	if _, err := read(append(stream(t), 0)); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("err = %v; want ErrCorrupt", err)
	}
}

func TestNewerVersionRefused(t *testing.T) {
	data := stream(t)
	data[len(snapshot.Magic)] = snapshot.Version + 1
	_, err := read(data)
	if !errors.Is(err, snapshot.ErrVersion) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("err = %v; want ErrVersion naming version 2", err)
	}
}

func TestNotASnapshot(t *testing.T) {
	_, err := read([]byte("PK\x03\x04 a zip file, not a snapshot"))
	if !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "not an edgeshard snapshot") {
		t.Fatalf("err = %v", err)
	}
}

// TestWriterMisuse: methods out of order fail and the error sticks.
func TestWriterMisuse(t *testing.T) {
	w := snapshot.NewWriter(io.Discard, snapshot.Header{})
	if err := w.BeginSection("x"); err == nil {
		t.Fatal("BeginSection outside a shard succeeded")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a misuse succeeded")
	}
}

// FuzzReader: any input is read without a panic, and is either the
// stream it was or refused.
func FuzzReader(f *testing.F) {
	data := streamOf(f, 40)
	f.Add(data)
	f.Add(data[:40])
	f.Add([]byte(snapshot.Magic + "\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := read(b)
		if err == nil && bytes.Equal(b, data) && got == "" {
			t.Fatal("valid stream read as nothing")
		}
	})
}
