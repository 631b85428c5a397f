package proxy

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/pgerr"
)

// The admin console: database "shardgate", users in admin_users, simple
// query protocol only. Commands and column names follow PgBouncer's console
// where the concept is the same, so dashboards and habits carry over;
// shardgate adds a shard column where PgBouncer has one database per pool.

// clientInfo is what SHOW CLIENTS shows, fixed at startup.
type clientInfo struct {
	user, database, application string
	connected                   time.Time
}

func (c *client) adminLoop() error {
	for {
		if c.srv.draining.Load() {
			return c.fatal(pgerr.CodeAdminShutdown, "terminating connection: shardgate is shutting down")
		}
		_, err := c.awaitRequest(true) // a drain may wake it
		var typ byte
		var body []byte
		if err == nil {
			typ, body, err = c.readMessage()
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && c.srv.draining.Load() {
				continue
			}
			return err
		}
		switch typ {
		case 'Q':
			c.adminCommand(strings.TrimRight(string(body), "\x00"))
		case 'X':
			return nil
		case 'S':
			c.out = appendReadyForQuery(c.out, 'I')
		case 'P', 'B', 'D', 'E', 'C', 'H':
			// Answered once, at the Sync that ends the batch.
			if typ == 'P' {
				c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "the admin console supports only the simple query protocol"})
			}
			continue
		default:
			return fmt.Errorf("invalid frontend message type %q", typ)
		}
		if err := c.flush(); err != nil {
			return err
		}
	}
}

func (c *client) adminCommand(sql string) {
	sql = strings.TrimRight(strings.TrimSpace(sql), "; \n\t")
	words := strings.Fields(sql)
	var err error
	switch {
	case len(words) == 0:
		c.out = appendEmpty(c.out, 'I')
	case len(words) == 1 && strings.EqualFold(words[0], "SHUTDOWN"):
		// The whole answer goes out before the shutdown closes this
		// connection with the others.
		c.out = appendReadyForQuery(appendCommandComplete(c.out, "SHUTDOWN"), 'I')
		c.flush()
		c.srv.Shutdown()
		return
	case strings.EqualFold(words[0], "RESHARD"):
		err = c.adminReshard(sql)
	case strings.EqualFold(words[0], "SET"):
		err = c.adminSet(sql)
	case len(words) == 2 && strings.EqualFold(words[0], "SHOW"):
		err = c.adminShow(strings.ToUpper(words[1]))
	case len(words) <= 2:
		arg := ""
		if len(words) == 2 {
			arg = strings.Trim(words[1], `"`)
		}
		err = c.adminAction(strings.ToUpper(words[0]), arg)
	default:
		err = fmt.Errorf("unknown command %q: try SHOW HELP", sql)
	}
	var pe *pgerr.Error
	switch {
	case errors.As(err, &pe):
		c.out = appendError(c.out, pe)
	case err != nil:
		c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeSyntaxError, Message: err.Error()})
	}
	c.out = appendReadyForQuery(c.out, 'I')
}

func (c *client) adminShow(what string) error {
	show, ok := adminShows()[what]
	if !ok {
		return fmt.Errorf("unknown SHOW %s: try SHOW HELP", strings.ToLower(what))
	}
	cols, rows := show(c)
	c.appendTable(cols, rows)
	c.out = appendCommandComplete(c.out, "SHOW")
	return nil
}

// adminShows are the SHOW commands; each returns its columns and rows.
func adminShows() map[string]func(*client) ([]string, [][]string) {
	return map[string]func(*client) ([]string, [][]string){
		"HELP": (*client).showHelp,
		"VERSION": func(*client) ([]string, [][]string) {
			return []string{"version"}, [][]string{{"shardgate " + BuildVersion()}}
		},
		"POOLS":     (*client).showPools,
		"STATS":     (*client).showStats,
		"TOTALS":    (*client).showTotals,
		"CLIENTS":   (*client).showClients,
		"SERVERS":   (*client).showServers,
		"DATABASES": (*client).showDatabases,
		"USERS":     (*client).showUsers,
		"LISTS":     (*client).showLists,
		"MEM":       (*client).showMem,
		"STATE":     (*client).showState,
		"CONFIG":    (*client).showConfig,
		"SHARDS":    (*client).showShards,
		"FENCES":    (*client).showFences,
		"ROUTER":    (*client).showRouter,
	}
}

// sqlNull in a row is sent as NULL, as PgBouncer sends unset values (a
// text value cannot hold a zero byte, so it is no value's spelling).
const sqlNull = "\x00"

// appendTable writes a text-typed result set.
func (c *client) appendTable(cols []string, rows [][]string) {
	desc := pgproto3.RowDescription{}
	for _, name := range cols {
		desc.Fields = append(desc.Fields, pgproto3.FieldDescription{Name: []byte(name), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	c.out, _ = desc.Encode(c.out)
	for _, row := range rows {
		dr := pgproto3.DataRow{Values: make([][]byte, len(row))}
		for i, v := range row {
			if v != sqlNull {
				dr.Values[i] = []byte(v)
			}
		}
		c.out, _ = dr.Encode(c.out)
	}
}

func itoa(n int) string         { return strconv.Itoa(n) }
func i64(n int64) string        { return strconv.FormatInt(n, 10) }
func u64(n uint64) string       { return strconv.FormatUint(n, 10) }
func us(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

func avg(total time.Duration, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return total / time.Duration(n)
}

func stamp(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func splitAddr(addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}
