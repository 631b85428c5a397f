package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/shardgate/shardgate/merge"
	"github.com/shardgate/shardgate/pgerr"
)

// The executor's tests run against fake shards: each records the
// statements it was sent, in one journal shared with the decision log so
// the order across shards can be checked, and answers from a script.

// journal is what happened, in order, across the fake shards and log.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(entry string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, entry)
}

// index is the position of the first entry, -1 if none.
func (j *journal) index(entry string) int { return slices.Index(j.entries, entry) }

type fakeShard struct {
	name   string
	j      *journal
	answer func(sql string) shardAnswer // nil: every statement succeeds
	mu     sync.Mutex
	sent   []string
	broken bool
}

func (f *fakeShard) exchange(req []byte, _ bool) shardAnswer {
	var sql string
	for len(req) >= 5 {
		n := int(binary.BigEndian.Uint32(req[1:5]))
		if req[0] == 'Q' {
			sql = strings.TrimSuffix(string(req[5:1+n]), "\x00")
			f.mu.Lock()
			f.sent = append(f.sent, sql)
			f.mu.Unlock()
			f.j.add(f.name + ": " + sql)
		}
		req = req[1+n:]
	}
	if f.answer == nil {
		return shardAnswer{tag: "OK"}
	}
	return f.answer(sql)
}

func (f *fakeShard) markBroken() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken = true
}

type fakeDecisions struct {
	j    *journal
	gids []string
	err  error
}

func (d *fakeDecisions) commit(gid string) error {
	if d.err != nil {
		return d.err
	}
	d.gids = append(d.gids, gid)
	d.j.add("log: " + gid)
	return nil
}

// failOn answers an ErrorResponse with code to statements starting with prefix.
func failOn(prefix, code string) func(string) shardAnswer {
	return func(sql string) shardAnswer {
		if strings.HasPrefix(sql, prefix) {
			return shardAnswer{errMsg: appendError(nil, &pgerr.Error{Code: code, Message: "scripted failure"})}
		}
		return shardAnswer{tag: "OK"}
	}
}

// newFakes makes n fake shards and a decision log sharing one journal.
func newFakes(n int) ([]*fakeShard, []shardConn, *fakeDecisions, executor) {
	j := &journal{}
	fakes := make([]*fakeShard, n)
	conns := make([]shardConn, n)
	for i := range fakes {
		fakes[i] = &fakeShard{name: fmt.Sprintf("shard%d", i), j: j}
		conns[i] = fakes[i]
	}
	d := &fakeDecisions{j: j}
	return fakes, conns, d, executor{twoPhase: true, decisions: d, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestExecutorTwoPhaseCommit(t *testing.T) {
	fakes, conns, d, e := newFakes(3)
	if msg := e.settle(conns, false); msg != nil {
		t.Fatalf("commit failed: %s", errorCode(msg))
	}
	if len(d.gids) != 1 || !strings.HasPrefix(d.gids[0], gidPrefix) {
		t.Fatalf("decision log has %q, want one %s... gid", d.gids, gidPrefix)
	}
	gid := d.gids[0]
	want := []string{"PREPARE TRANSACTION '" + gid + "'", "COMMIT PREPARED '" + gid + "'"}
	for _, f := range fakes {
		if !slices.Equal(f.sent, want) {
			t.Errorf("%s was sent %q, want %q", f.name, f.sent, want)
		}
		if f.broken {
			t.Errorf("%s marked broken", f.name)
		}
	}
	logged := d.j.index("log: " + gid)
	for _, f := range fakes {
		if p, c := d.j.index(f.name+": "+want[0]), d.j.index(f.name+": "+want[1]); p > logged || c < logged {
			t.Errorf("%s: PREPARE at %d, COMMIT PREPARED at %d, decision logged at %d: %q", f.name, p, c, logged, d.j.entries)
		}
	}
}

func TestExecutorPrepareFails(t *testing.T) {
	fakes, conns, d, e := newFakes(3)
	fakes[1].answer = failOn("PREPARE", "40001")
	msg := e.settle(conns, false)
	if msg == nil || errorCode(msg) != "40001" {
		t.Fatalf("settle returned %q, want the failed PREPARE's 40001", msg)
	}
	if len(d.gids) != 0 {
		t.Fatalf("decision logged %q though a shard failed to prepare", d.gids)
	}
	gid := strings.TrimSuffix(strings.TrimPrefix(fakes[0].sent[0], "PREPARE TRANSACTION '"), "'")
	for i, f := range fakes {
		want := []string{"PREPARE TRANSACTION '" + gid + "'", "ROLLBACK PREPARED '" + gid + "'"}
		if i == 1 { // its PREPARE failed: nothing is prepared there
			want[1] = "ROLLBACK"
		}
		if !slices.Equal(f.sent, want) {
			t.Errorf("%s was sent %q, want %q", f.name, f.sent, want)
		}
	}
}

func TestExecutorDecisionLogFails(t *testing.T) {
	fakes, conns, d, e := newFakes(2)
	d.err = errors.New("disk full")
	msg := e.settle(conns, false)
	if msg == nil || errorCode(msg) != "58030" {
		t.Fatalf("settle returned %q, want 58030", msg)
	}
	for _, f := range fakes {
		if len(f.sent) != 2 || !strings.HasPrefix(f.sent[1], "ROLLBACK PREPARED '"+gidPrefix) {
			t.Errorf("%s was sent %q, want PREPARE then ROLLBACK PREPARED", f.name, f.sent)
		}
	}
}

func TestExecutorShardLostDuringCommit(t *testing.T) {
	fakes, conns, d, e := newFakes(3)
	fakes[2].answer = func(sql string) shardAnswer {
		if strings.HasPrefix(sql, "COMMIT PREPARED") {
			return shardAnswer{err: io.ErrUnexpectedEOF}
		}
		return shardAnswer{tag: "PREPARE TRANSACTION"}
	}
	msg := e.settle(conns, false)
	if msg == nil || errorCode(msg) != "08006" {
		t.Fatalf("settle returned %q, want 08006", msg)
	}
	if len(d.gids) != 1 {
		t.Fatalf("decision log has %q, want the decided gid", d.gids)
	}
	for i, f := range fakes {
		if f.broken != (i == 2) {
			t.Errorf("%s broken = %v", f.name, f.broken)
		}
		if f.sent[len(f.sent)-1] != "COMMIT PREPARED '"+d.gids[0]+"'" {
			t.Errorf("%s was sent %q, want COMMIT PREPARED last", f.name, f.sent)
		}
	}
}

func TestExecutorSettleWithoutTwoPhase(t *testing.T) {
	for _, tc := range []struct {
		name     string
		twoPhase bool
		shards   int
		rollback bool
		want     string
	}{
		{"commit without two_phase_commit", false, 3, false, "COMMIT"},
		{"one shard with two_phase_commit", true, 1, false, "COMMIT"},
		{"rollback", true, 3, true, "ROLLBACK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fakes, conns, d, e := newFakes(tc.shards)
			e.twoPhase = tc.twoPhase
			if msg := e.settle(conns, tc.rollback); msg != nil {
				t.Fatalf("settle returned %s", errorCode(msg))
			}
			for _, f := range fakes {
				if !slices.Equal(f.sent, []string{tc.want}) {
					t.Errorf("%s was sent %q, want %q", f.name, f.sent, tc.want)
				}
			}
			if len(d.gids) != 0 {
				t.Errorf("decision logged %q", d.gids)
			}
		})
	}
}

// writeReqs is the same write for every shard, as broadcastWrite sends it.
func writeReqs(n int, sql string) []request {
	reqs := make([]request, n)
	for i := range reqs {
		reqs[i] = request{bytes: appendMessage(nil, 'Q', append([]byte(sql), 0))}
	}
	return reqs
}

func TestExecutorBroadcastWriteSumsTags(t *testing.T) {
	for _, tc := range []struct {
		tags []string
		want string
	}{
		{[]string{"UPDATE 2", "UPDATE 3", "UPDATE 0"}, "UPDATE 5"},
		{[]string{"INSERT 0 1", "INSERT 0 4"}, "INSERT 0 5"},
		{[]string{"DELETE 0", "DELETE 0"}, "DELETE 0"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			fakes, conns, _, e := newFakes(len(tc.tags))
			e.twoPhase = false
			for i, f := range fakes {
				tag := tc.tags[i]
				f.answer = func(string) shardAnswer { return shardAnswer{tag: tag} }
			}
			answers, msg, lost := e.write(conns, writeReqs(len(conns), "UPDATE t SET v = 1"))
			if msg != nil || lost != nil {
				t.Fatalf("write failed: %q %v", msg, lost)
			}
			if got := sumWrites(answers).tag; got != tc.want {
				t.Errorf("summed tag %q, want %q", got, tc.want)
			}
			for _, f := range fakes {
				if !slices.Equal(f.sent, []string{"UPDATE t SET v = 1", "COMMIT"}) {
					t.Errorf("%s was sent %q", f.name, f.sent)
				}
			}
		})
	}
}

func TestExecutorBroadcastWriteAllOrNone(t *testing.T) {
	fakes, conns, d, e := newFakes(3)
	fakes[1].answer = failOn("UPDATE", "23505")
	answers, msg, lost := e.write(conns, writeReqs(3, "UPDATE t SET v = 1"))
	if answers != nil || lost != nil || msg == nil || errorCode(msg) != "23505" {
		t.Fatalf("write gave answers %v, lost %v, error %q; want the shard's 23505", answers, lost, msg)
	}
	for _, f := range fakes {
		if !slices.Equal(f.sent, []string{"UPDATE t SET v = 1", "ROLLBACK"}) {
			t.Errorf("%s was sent %q, want the write rolled back", f.name, f.sent)
		}
	}
	if len(d.gids) != 0 {
		t.Errorf("decision logged %q", d.gids)
	}
}

func TestExecutorBroadcastWriteShardLost(t *testing.T) {
	fakes, conns, _, e := newFakes(3)
	fakes[0].answer = func(sql string) shardAnswer {
		if strings.HasPrefix(sql, "UPDATE") {
			return shardAnswer{err: io.ErrUnexpectedEOF}
		}
		return shardAnswer{tag: "ROLLBACK"} // so only the write can mark it broken
	}
	_, msg, lost := e.write(conns, writeReqs(3, "UPDATE t SET v = 1"))
	if !errors.Is(lost, io.ErrUnexpectedEOF) || msg != nil {
		t.Fatalf("write gave lost %v, error %q; want the shard's I/O error", lost, msg)
	}
	for i, f := range fakes {
		if f.broken != (i == 0) {
			t.Errorf("%s broken = %v", f.name, f.broken)
		}
		if !slices.Equal(f.sent, []string{"UPDATE t SET v = 1", "ROLLBACK"}) {
			t.Errorf("%s was sent %q, want the write rolled back", f.name, f.sent)
		}
	}
}

// inDoubt answers the list of prepared transactions with gids, and fails
// the resolution of failGid.
func inDoubt(failGid string, gids ...string) func(string) shardAnswer {
	return func(sql string) shardAnswer {
		if strings.HasPrefix(sql, "SELECT gid") {
			a := shardAnswer{tag: fmt.Sprintf("SELECT %d", len(gids))}
			for _, g := range gids {
				a.rows = append(a.rows, merge.Row{[]byte(g)})
			}
			return a
		}
		if failGid != "" && strings.Contains(sql, failGid) {
			return shardAnswer{errMsg: appendError(nil, &pgerr.Error{Code: "42704", Message: "scripted failure"})}
		}
		return shardAnswer{tag: "OK"}
	}
}

func TestResolveInDoubt(t *testing.T) {
	fakes, _, _, _ := newFakes(1)
	f := fakes[0]
	f.answer = inDoubt("", gidPrefix+"a", gidPrefix+"b")
	var resolved []string
	err := resolveInDoubt(f, map[string]bool{gidPrefix + "a": true}, func(gid, action string) {
		resolved = append(resolved, action+" "+gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"COMMIT PREPARED '" + gidPrefix + "a'", "ROLLBACK PREPARED '" + gidPrefix + "b'"}
	if !slices.Equal(f.sent[1:], want) {
		t.Errorf("shard was sent %q, want the list then %q", f.sent, want)
	}
	if len(resolved) != 2 {
		t.Errorf("resolved %q, want both", resolved)
	}
}

func TestResolveInDoubtStopsOnFailure(t *testing.T) {
	fakes, _, _, _ := newFakes(1)
	f := fakes[0]
	f.answer = inDoubt(gidPrefix+"a", gidPrefix+"a", gidPrefix+"b")
	err := resolveInDoubt(f, map[string]bool{}, func(string, string) { t.Error("a failed resolution was reported as resolved") })
	if err == nil || !strings.Contains(err.Error(), "ROLLBACK PREPARED "+gidPrefix+"a failed") {
		t.Fatalf("error %v, want the failed ROLLBACK PREPARED", err)
	}
	if len(f.sent) != 2 {
		t.Errorf("shard was sent %q, want nothing after the failure", f.sent)
	}
}

func TestResolveInDoubtListFails(t *testing.T) {
	fakes, _, _, _ := newFakes(1)
	f := fakes[0]
	f.answer = failOn("SELECT gid", "42501")
	if err := resolveInDoubt(f, nil, func(string, string) {}); err == nil {
		t.Fatal("a failed list of prepared transactions was not reported")
	}
}
