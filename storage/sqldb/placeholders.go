package sqldb

import (
	"strconv"
	"strings"
)

// rewrite turns a statement written with SQLite's placeholders into
// PostgreSQL's: ? and ?NNN become $N, numbered as SQLite numbers them (a
// bare ? takes one more than the largest number so far; ?NNN reuses NNN).
// Quoted strings ('…', E'…', $tag$…$tag$), quoted identifiers and comments
// (nested /* */ too) are left alone. A statement run without arguments is
// returned unchanged (a migration's text, which may use ? operators); one
// being prepared (rewritePrepared) is rewritten, without casts.
//
// When args are given, a placeholder whose argument is an int64, a float64
// or a []byte gets a cast, $N::bigint, $N::float8 or $N::bytea: the value
// brings its type, as on SQLite, instead of PostgreSQL inferring one from
// the context (SELECT ? would be text, CASE WHEN ? > 0 an int4 that 2^31
// overflows). Text and NULL arguments take the type their context gives
// them, so a string fits a uuid, jsonb or timestamptz column as well as a
// text one.
//
// PostgreSQL operators spelt with ? (jsonb ?, ?| and ?&; geometric ?-, ?#…)
// cannot be written: use their functions (jsonb_exists…).
func rewrite(q string, args []any) (string, error) {
	if len(args) == 0 {
		return q, nil
	}
	return rewriteArgs(q, args)
}

// rewritePrepared rewrites a statement prepared before its arguments are
// known: PostgreSQL infers each parameter's type from its context.
func rewritePrepared(q string) (string, error) { return rewriteArgs(q, nil) }

func rewriteArgs(q string, args []any) (string, error) {
	if strings.IndexByte(q, '?') < 0 {
		return q, nil
	}
	var b strings.Builder
	b.Grow(len(q) + 8*len(args))
	largest := 0
	start := 0 // q[start:i] is yet to be copied
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			escapes := i > 0 && (q[i-1] == 'E' || q[i-1] == 'e') && (i == 1 || !isWordByte(q[i-2]))
			i = skipQuoted(q, i, '\'', escapes)
		case c == '"':
			i = skipQuoted(q, i, '"', false)
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			if j := strings.IndexByte(q[i:], '\n'); j >= 0 {
				i += j + 1
			} else {
				i = len(q)
			}
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			i = skipBlockComment(q, i)
		case c == '$' && (i == 0 || !isWordByte(q[i-1])):
			i = skipDollarQuoted(q, i)
		case isWordByte(c):
			for i < len(q) && isWordByte(q[i]) {
				i++
			}
		case c == '?':
			j := i + 1
			for j < len(q) && '0' <= q[j] && q[j] <= '9' {
				j++
			}
			n := largest + 1
			if j > i+1 {
				v, err := strconv.Atoi(q[i+1 : j])
				if err != nil || v < 1 || v > 32766 {
					return "", invalidErr("bad parameter number %q", q[i:j])
				}
				n = v
			}
			largest = max(largest, n)
			b.WriteString(q[start:i])
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			if n <= len(args) {
				switch args[n-1].(type) {
				case int64:
					b.WriteString("::bigint")
				case float64:
					b.WriteString("::float8")
				case []byte:
					b.WriteString("::bytea")
				}
			}
			i, start = j, j
		default:
			i++
		}
	}
	b.WriteString(q[start:])
	return b.String(), nil
}

// skipQuoted returns the index after the quoted run that starts at q[i]
// (quote doubled inside; backslash escapes in E'…' strings).
func skipQuoted(q string, i int, quote byte, escapes bool) int {
	for i++; i < len(q); i++ {
		switch q[i] {
		case '\\':
			if escapes {
				i++
			}
		case quote:
			if i+1 < len(q) && q[i+1] == quote {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(q)
}

// skipBlockComment returns the index after the /* */ comment at q[i];
// PostgreSQL's block comments nest.
func skipBlockComment(q string, i int) int {
	depth := 0
	for i < len(q) {
		switch {
		case q[i] == '/' && i+1 < len(q) && q[i+1] == '*':
			depth++
			i += 2
		case q[i] == '*' && i+1 < len(q) && q[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(q)
}

// skipDollarQuoted returns the index after the $tag$…$tag$ string at q[i],
// or i+1 when q[i] starts none ($1, a lone $).
func skipDollarQuoted(q string, i int) int {
	j := i + 1
	for j < len(q) && (q[j] == '_' || q[j] >= 0x80 || ('a' <= q[j] && q[j] <= 'z') || ('A' <= q[j] && q[j] <= 'Z') ||
		(j > i+1 && '0' <= q[j] && q[j] <= '9')) {
		j++
	}
	if j >= len(q) || q[j] != '$' {
		return i + 1
	}
	tag := q[i : j+1]
	if k := strings.Index(q[j+1:], tag); k >= 0 {
		return j + 1 + k + len(tag)
	}
	return len(q)
}
