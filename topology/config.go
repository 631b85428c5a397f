package topology

import (
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the shardgate.yaml file.
type Config struct {
	Listen   string        `yaml:"listen"`   // default "127.0.0.1:6432"
	Database string        `yaml:"database"` // required: the db name clients connect to
	Pool     PoolConfig    `yaml:"pool"`
	Shards   []ShardConfig `yaml:"shards"`
	Keyspace []RangeConfig `yaml:"keyspace"`
	// Tables maps sharded table names to their shard key. Table names, here
	// and in ReferenceTables, are lower-case identifiers stored as given:
	// they match the unqualified, unquoted table name in SQL, which
	// PostgreSQL folds to lower case.
	Tables          map[string]TableConfig `yaml:"tables"`
	ReferenceTables []string               `yaml:"reference_tables"`
}

// PoolConfig configures server connection pooling.
type PoolConfig struct {
	Mode             string   `yaml:"mode"`               // "transaction" (default); "session" and "statement" are not supported yet
	Size             int      `yaml:"size"`               // default 20, at least 1
	QueryWaitTimeout Duration `yaml:"query_wait_timeout"` // how long a client waits for a server connection; default 30s
}

// ShardConfig is one shard: a primary and its read replicas, each a
// postgres:// or postgresql:// URL.
type ShardConfig struct {
	Name     string   `yaml:"name"`
	Primary  string   `yaml:"primary"`
	Replicas []string `yaml:"replicas"`
}

// RangeConfig assigns a key range, in Vitess notation (see ParseKeyRange),
// to a shard.
type RangeConfig struct {
	Range string `yaml:"range"`
	Shard string `yaml:"shard"`
}

// TableConfig is a sharded table.
type TableConfig struct {
	ShardKey string  `yaml:"shard_key"`
	KeyType  KeyType `yaml:"key_type"` // default bigint
}

// Duration is a time.Duration that YAML reads as "5s", "250ms".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as \"5s\" or \"250ms\"")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("invalid duration %q, want e.g. \"5s\" or \"250ms\"", n.Value)
	}
	*d = Duration(v)
	return nil
}

const (
	defaultListen           = "127.0.0.1:6432"
	defaultPoolMode         = "transaction"
	defaultPoolSize         = 20
	defaultQueryWaitTimeout = Duration(30 * time.Second)
)

// LoadConfig reads and parses the config file at path; see ParseConfig.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes a config file, fills in defaults and validates it.
// filename is used only in error messages, which have the form
// "file:line: field: message", one line per problem.
func ParseConfig(filename string, data []byte) (*Config, error) {
	// Defaults go in before decoding so that a value written explicitly,
	// such as "size: 0", is validated rather than silently replaced.
	cfg := &Config{
		Listen: defaultListen,
		Pool: PoolConfig{
			Mode:             defaultPoolMode,
			Size:             defaultPoolSize,
			QueryWaitTimeout: defaultQueryWaitTimeout,
		},
	}
	pos, err := decode(filename, data, cfg)
	if err != nil {
		return nil, err
	}
	for name, t := range cfg.Tables {
		if t.KeyType == "" {
			t.KeyType = KeyBigint
			cfg.Tables[name] = t
		}
	}
	p := &problems{file: filename, pos: pos}
	cfg.checkServer(p)
	cfg.checkLayout(p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}
