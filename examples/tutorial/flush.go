package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// The shard creates its table itself; IF NOT EXISTS makes that cheap.
const createTable = `CREATE TABLE IF NOT EXISTS page_views (
	page       TEXT PRIMARY KEY,
	views      BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
)`

// upsert writes the page's total, never a smaller one than SQL has.
const upsert = `INSERT INTO page_views (page, views, updated_at) VALUES (?, ?, ?)
ON CONFLICT (page) DO UPDATE SET views = excluded.views, updated_at = excluded.updated_at
WHERE excluded.views > page_views.views`

// flush is the alarm handler. Storage holds the truth; SQL gets the total
// (not an increment), so running flush twice — alarms are delivered at
// least once — writes the same row again instead of counting twice.
func flush(info sdk.AlarmInfo) error {
	views, err := number("views")
	if err != nil {
		return err
	}
	flushed, err := number("flushed")
	if err != nil || views == flushed {
		return err
	}
	page, _, err := sdk.Storage().Get("page")
	if err != nil {
		return err
	}
	_, err = sdk.SQL().Batch([]sdk.Statement{
		{SQL: createTable},
		{SQL: upsert, Args: []any{string(page), views, time.Now().UnixMilli()}},
	})
	if err != nil {
		// Returning the error makes the host retry: 2 s, 4 s, ... 64 s.
		sdk.Warn("pageviews flush failed", "page", string(page),
			"retry", strconv.Itoa(info.RetryCount), "error", err.Error())
		return err
	}
	// One data point per flush: the page, and the views since the last one.
	point := sdk.DataPoint{
		Indexes: []string{string(page)},
		Blobs:   [][]byte{page},
		Doubles: []float64{float64(views - flushed)},
	}
	if err := sdk.Analytics().WriteDataPoint(point); err != nil {
		sdk.Warn("pageviews analytics point rejected", "error", err.Error())
	}
	sdk.Info("pageviews flushed", "page", string(page), "views", strconv.FormatInt(views, 10))
	return sdk.Storage().Put("flushed", []byte(strconv.FormatInt(views, 10)))
}

// top reads the most viewed pages of the whole site from SQL: every page
// shard writes to the same table. The batch creates the table first, in
// case no page was flushed yet; its second result holds the rows.
func top() *sdk.Response {
	res, err := sdk.SQL().Batch([]sdk.Statement{
		{SQL: createTable},
		{SQL: `SELECT page, views FROM page_views ORDER BY views DESC, page LIMIT 10`},
	})
	if err != nil {
		return sdk.ErrorJSON(500, "sql", err.Error())
	}
	pages := []map[string]any{}
	for _, row := range res[1].Rows {
		pages = append(pages, map[string]any{"page": row[0], "views": row[1]})
	}
	return sdk.JSON(200, map[string]any{"top": pages})
}
