package reshard

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/shardgate/shardgate/topology"
)

// Phase is how far a reshard has gone. Every step moves it forward only
// once its work is durable, so a step killed anywhere is run again from the
// phase the state file names.
type Phase string

const (
	PhaseCopying Phase = "copying" // schema made; parts being copied under their snapshots
	PhaseCopied  Phase = "copied"  // every part copied: its stream catches up until cutover
	// PhaseSwitching: the proxies were being told to switch when the
	// command stopped; some may serve the new layout. Only cutover goes on.
	PhaseSwitching Phase = "switching"
	PhaseSwitched  Phase = "switched" // proxies serve the new layout; reverse streams keep the source whole
)

// State is a reshard in progress, kept as JSON beside the config file
// (StatePath). The positions applied by the streams live on the servers
// that receive them, in the same transactions as the changes, so this file
// never needs to be written in step with a change.
type State struct {
	ID          string      `json:"id"` // names slots and publications
	Config      string      `json:"config"`
	Phase       Phase       `json:"phase"`
	Source      string      `json:"source"`
	From        string      `json:"from"`
	Parts       []PartState `json:"parts"`
	Publication string      `json:"publication"`
	Before      Layout      `json:"before"` // what abort returns to
	After       Layout      `json:"after"`
	Started     time.Time   `json:"started"`
	Switched    time.Time   `json:"switched,omitzero"`
}

// Layout is the part of a config a reshard changes; it is also what the
// proxies' RESHARD SWITCH takes.
type Layout struct {
	Shards   []topology.ShardConfig `json:"shards"`
	Keyspace []topology.RangeConfig `json:"keyspace"`
	// ReadFloor, by shard name, is a WAL position on that shard's primary
	// that its replicas must have replayed before they serve reads.
	ReadFloor map[string]string `json:"read_floor,omitempty"`
}

// LayoutOf is cfg's layout.
func LayoutOf(cfg *topology.Config) Layout {
	return Layout{Shards: cfg.Shards, Keyspace: cfg.Keyspace}
}

// On returns a copy of cfg with layout l.
func (l Layout) On(cfg *topology.Config) *topology.Config {
	next := *cfg
	next.Shards, next.Keyspace = l.Shards, l.Keyspace
	return &next
}

// PartState is one target's progress.
type PartState struct {
	Range  string               `json:"range"`
	Target topology.ShardConfig `json:"target"`
	Slot   string               `json:"slot"`
	Tables map[string]TableCopy `json:"tables"` // by table name, reference tables included
	// ReverseSlot, on the target, streams its writes back to the source
	// after cutover, so that abort loses nothing.
	ReverseSlot string `json:"reverse_slot,omitempty"`
}

// TableCopy is one table's copy onto one target.
type TableCopy struct {
	Rows     int64     `json:"rows"`
	Estimate int64     `json:"estimate"`
	Done     bool      `json:"done"`
	Began    time.Time `json:"began,omitzero"`
	Updated  time.Time `json:"updated,omitzero"`
}

// StatePath is where the state of a reshard of the config at configPath
// lives.
func StatePath(configPath string) string { return configPath + ".reshard.json" }

// LoadState reads the state beside configPath; ok is false when no reshard
// is in progress.
func LoadState(configPath string) (st *State, ok bool, err error) {
	data, err := os.ReadFile(StatePath(configPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st = &State{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, false, fmt.Errorf("%s: %w", StatePath(configPath), err)
	}
	return st, true, nil
}

// Save writes the state durably: a temporary file, fsynced, renamed over
// the old one, so a crash leaves either the old state or the new.
func (st *State) Save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(StatePath(st.Config), append(data, '\n'), 0o600)
}

// Remove deletes the state file: the reshard is over.
func (st *State) Remove() error {
	err := os.Remove(StatePath(st.Config))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync() // the rename itself survives a crash
		dir.Close()
	}
	return nil
}

// Plan rebuilds the plan the state was made from.
func (st *State) Plan() (Plan, error) {
	from, err := topology.ParseKeyRange(st.From)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Source: st.Source, From: from}
	for _, ps := range st.Parts {
		r, err := topology.ParseKeyRange(ps.Range)
		if err != nil {
			return Plan{}, err
		}
		p.Parts = append(p.Parts, Part{Range: r, Target: ps.Target})
	}
	return p, nil
}
