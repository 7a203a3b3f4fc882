// Command leaderboard is an edgeshard example: one shard per board keeps
// every player's best score in an index stored in rank order, so a top-k
// query is one ordered range read. While scores change, an alarm copies the
// top of the board to SQL every 60 s (a snapshot other services can query).
//
// Routes (the shard's name is the board's name):
//
//	POST /score  {"player":"ann","score":42}   keep the player's best score
//	GET  /top?k=10                             the best k players (1..100)
//	GET  /rank?player=ann                      one player's best score and rank
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o leaderboard.wasm ./examples/leaderboard
package main

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

const (
	// defaultTop and maxTop bound GET /top?k=.
	defaultTop = 10
	maxTop     = 100
	// maxScore keeps scores exact in every JSON client (2^53 - 1).
	maxScore = 1<<53 - 1
	// maxIDLen bounds player ids. Ids are storage key suffixes and appear
	// in JSON, so they are kept to a plain alphabet (sdk.PlainID).
	maxIDLen = 64
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: snapshot})
}

var router = sdk.Router{Routes: []sdk.Route{
	{Method: "POST", Path: "/score", Handle: postScore},
	{Method: "GET", Path: "/top", Handle: getTop},
	{Method: "GET", Path: "/rank", Handle: getRank},
}}

// postScore records a score; only a better one than the player's best
// changes anything.
func postScore(req *sdk.Request) *sdk.Response {
	var in struct {
		Player string      `json:"player"`
		Score  json.Number `json:"score"`
	}
	if err := json.Unmarshal(req.Body, &in); err != nil {
		return sdk.ErrorJSON(400, "bad_body", `want {"player":"...","score":N}: `+err.Error())
	}
	if !sdk.PlainID(in.Player, maxIDLen) {
		return sdk.ErrorJSON(400, "bad_player", "player must be 1-64 characters of A-Z a-z 0-9 _ - . : @")
	}
	score, err := strconv.ParseInt(in.Score.String(), 10, 64)
	if err != nil || score < 0 || score > maxScore {
		return sdk.ErrorJSON(400, "bad_score", "score must be an integer from 0 to 9007199254740991")
	}
	best, known, err := loadBest(in.Player)
	if err != nil {
		return storageError(err)
	}
	improved := !known || score > best.score
	if improved {
		next := entry{player: in.Player, score: score, at: time.Now().UnixMilli()}
		if err := saveBest(next, best, known); err != nil {
			return storageError(err)
		}
		if err := markDirty(boardName(req)); err != nil {
			return storageError(err)
		}
		best = next
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "board", boardName(req))
	b = sdk.AppendJSONStr(b, "player", in.Player)
	b = sdk.AppendJSONInt(b, "score", score)
	b = sdk.AppendJSONInt(b, "best", best.score)
	b = sdk.AppendJSONBool(b, "improved", improved)
	return sdk.RawJSON(200, append(b, '}'))
}

// getTop answers the best k players, best first.
func getTop(req *sdk.Request) *sdk.Response {
	k := defaultTop
	if q := sdk.Query(req, "k"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > maxTop {
			return sdk.ErrorJSON(400, "bad_k", "k must be an integer from 1 to 100")
		}
		k = n
	}
	top, err := sdk.Storage().List(sdk.ListOptions{Prefix: indexPrefix, Limit: uint32(k)})
	if err != nil {
		return storageError(err)
	}
	players, err := num(keyPlayers)
	if err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "board", boardName(req))
	b = sdk.AppendJSONInt(b, "players", players)
	b = append(sdk.AppendJSONField(b, "top"), '[')
	for i, kv := range top {
		e, ok := decodeIndex(kv.Key)
		if !ok {
			return sdk.ErrorJSON(500, "corrupt_index", "bad index key "+strconv.Quote(kv.Key))
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = sdk.AppendJSONInt(append(b, '{'), "rank", int64(i+1))
		b = sdk.AppendJSONStr(b, "player", e.player)
		b = sdk.AppendJSONInt(b, "score", e.score)
		b = append(b, '}')
	}
	return sdk.RawJSON(200, append(b, ']', '}'))
}

// getRank answers one player's best score and rank. The rank is the number
// of index entries before the player's, plus one: a range read whose cost
// grows with the rank, fine for boards of thousands.
func getRank(req *sdk.Request) *sdk.Response {
	player := sdk.Query(req, "player")
	if !sdk.PlainID(player, maxIDLen) {
		return sdk.ErrorJSON(400, "bad_player", "player must be 1-64 characters of A-Z a-z 0-9 _ - . : @")
	}
	best, known, err := loadBest(player)
	if err != nil {
		return storageError(err)
	}
	if !known {
		return sdk.ErrorJSON(404, "no_such_player", "no score for player "+player)
	}
	ahead, err := sdk.Storage().List(sdk.ListOptions{Prefix: indexPrefix, End: best.indexKey(), HasEnd: true})
	if err != nil {
		return storageError(err)
	}
	b := sdk.AppendJSONStr([]byte{'{'}, "board", boardName(req))
	b = sdk.AppendJSONStr(b, "player", player)
	b = sdk.AppendJSONInt(b, "score", best.score)
	b = sdk.AppendJSONInt(b, "rank", int64(len(ahead)+1))
	return sdk.RawJSON(200, append(b, '}'))
}

// boardName is the shard's name, the board's: the object name the request
// was routed by.
func boardName(req *sdk.Request) string { return sdk.ObjectName(req) }

func storageError(err error) *sdk.Response {
	return sdk.ErrorJSON(500, "storage", err.Error())
}
