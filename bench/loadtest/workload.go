package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// opKind is one of the workload's requests.
type opKind int

const (
	opTimeline opKind = iota // the latest 20 posts of a user
	opProfile                // a user's row
	opPost                   // a new post by a user
	opFollow                 // a user follows another
	numOps
)

func (k opKind) String() string {
	switch k {
	case opTimeline:
		return "timeline"
	case opProfile:
		return "profile"
	case opPost:
		return "post"
	case opFollow:
		return "follow"
	}
	return "op" + strconv.Itoa(int(k))
}

const (
	timelineSQL = "SELECT id, body, likes, created_at FROM posts WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20"
	profileSQL  = "SELECT id, name, email, country, created_at FROM users WHERE id = $1"
	postSQL     = "INSERT INTO posts (user_id, id, body) VALUES ($1, $2, $3)"
	followSQL   = "INSERT INTO follows (user_id, followee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
)

// mix is the workload's weight per opKind.
type mix [numOps]int

// parseMix reads "timeline=50,profile=25,post=15,follow=10"; kinds left out
// get weight 0.
func parseMix(s string) (mix, error) {
	var m mix
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return m, fmt.Errorf("mix %q: %q is not name=weight", s, part)
		}
		k, err := kindByName(name)
		if err != nil {
			return m, fmt.Errorf("mix %q: %w", s, err)
		}
		w, err := strconv.Atoi(val)
		if err != nil || w < 0 {
			return m, fmt.Errorf("mix %q: weight of %s must be a whole number >= 0", s, name)
		}
		m[k] = w
		total += w
	}
	if total == 0 {
		return m, fmt.Errorf("mix %q: the weights add up to 0", s)
	}
	return m, nil
}

func kindByName(name string) (opKind, error) {
	for k := range numOps {
		if k.String() == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown request %q (want timeline, profile, post or follow)", name)
}

func (m mix) String() string {
	var parts []string
	for k := range numOps {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// pick maps n in [0, total weight) to a kind.
func (m mix) pick(n int) opKind {
	for k := range numOps {
		if n < m[k] {
			return k
		}
		n -= m[k]
	}
	return numOps - 1
}

func (m mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

// job is one scheduled request.
type job struct {
	at    time.Time // scheduled start
	kind  opKind
	user  int64
	other int64 // the new post's id, or the followee
	shard int
}

// generator draws the requests of the schedule. Only the dispatcher uses it,
// so the sequence depends on the seed alone, not on timing.
type generator struct {
	rnd        *rand.Rand
	mix        mix
	total      int
	shardOf    []int // by user id; index 0 unused
	nextPostID int64 // above every seeded post id, so inserts never collide
}

func newGenerator(seed uint64, m mix, shardOf []int, postsPerUser int) *generator {
	return &generator{rnd: rand.New(rand.NewPCG(seed, 0x10ad)), mix: m, total: m.total(), shardOf: shardOf,
		nextPostID: int64(postsPerUser) + 1}
}

func (g *generator) next(at time.Time) job {
	users := int64(len(g.shardOf) - 1)
	j := job{at: at, kind: g.mix.pick(g.rnd.IntN(g.total)), user: 1 + g.rnd.Int64N(users)}
	switch j.kind {
	case opPost:
		j.other = g.nextPostID
		g.nextPostID++
	case opFollow:
		j.other = 1 + g.rnd.Int64N(users)
	}
	j.shard = g.shardOf[j.user]
	return j
}

// execute runs j on conn and checks the answer is plausible.
func execute(ctx context.Context, conn *pgx.Conn, j job) error {
	switch j.kind {
	case opTimeline:
		return timeline(ctx, conn, j.user)
	case opProfile:
		return profile(ctx, conn, j.user)
	case opPost:
		_, err := conn.Exec(ctx, postSQL, j.user, j.other, "load test post "+strconv.FormatInt(j.other, 10))
		return err
	case opFollow:
		_, err := conn.Exec(ctx, followSQL, j.user, j.other)
		return err
	}
	return fmt.Errorf("unknown request kind %d", j.kind)
}

func timeline(ctx context.Context, conn *pgx.Conn, user int64) error {
	rows, err := conn.Query(ctx, timelineSQL, user)
	if err != nil {
		return err
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("timeline of user %d is empty: the seed gives everyone posts", user)
	}
	return nil
}

func profile(ctx context.Context, conn *pgx.Conn, user int64) error {
	var (
		id             int64
		name           string
		email, country *string
		created        time.Time
	)
	err := conn.QueryRow(ctx, profileSQL, user).Scan(&id, &name, &email, &country, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("profile of user %d: not found, though the seed has it", user)
	}
	return err
}
