package topology

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcessSettingsDefaults(t *testing.T) {
	cfg, err := ParseConfig("c.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UnixSocketDir != "" || cfg.UnixSocketMode != 0o777 || cfg.UnixSocketGroup != "" || cfg.PidFile != "" {
		t.Errorf("socket and pidfile defaults: %q %o %q %q", cfg.UnixSocketDir, cfg.UnixSocketMode, cfg.UnixSocketGroup, cfg.PidFile)
	}
	if !cfg.LogConnections || !cfg.LogDisconnections || cfg.StatsPeriod != Duration(time.Minute) {
		t.Errorf("logging defaults: %v %v %v", cfg.LogConnections, cfg.LogDisconnections, cfg.StatsPeriod)
	}
	if cfg.Workers != 0 {
		t.Errorf("workers default %d, want 0 (the runtime's own count)", cfg.Workers)
	}
}

func TestProcessSettingsOverrides(t *testing.T) {
	for _, mode := range []string{"0770", "770", "0o770", `"0770"`} {
		cfg, err := ParseConfig("/etc/sg/c.yaml", []byte(base+"unix_socket_dir: run\nunix_socket_mode: "+mode+
			"\nunix_socket_group: staff\npidfile: /var/run/sg.pid\nlog_connections: false\nlog_disconnections: false\nstats_period: 0s\nworkers: 2\n"))
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		if cfg.UnixSocketMode != 0o770 {
			t.Errorf("unix_socket_mode %s read as %o, want 770", mode, cfg.UnixSocketMode)
		}
		if cfg.UnixSocketDir != filepath.FromSlash("/etc/sg/run") || cfg.PidFile != "/var/run/sg.pid" || cfg.UnixSocketGroup != "staff" {
			t.Errorf("paths: dir %q, pidfile %q, group %q", cfg.UnixSocketDir, cfg.PidFile, cfg.UnixSocketGroup)
		}
		if cfg.LogConnections || cfg.LogDisconnections || cfg.StatsPeriod != 0 {
			t.Errorf("logging: %v %v %v", cfg.LogConnections, cfg.LogDisconnections, cfg.StatsPeriod)
		}
		if cfg.Workers != 2 {
			t.Errorf("workers: %d, want 2", cfg.Workers)
		}
	}
}

func TestProcessSettingsErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"stats_period: -1s\n", "c.yaml:8: stats_period: must not be negative"},
		{"workers: -1\n", "c.yaml:8: workers: must be between 0 (the runtime default: the CPUs the process may use) and 1024, got -1"},
		{"workers: 1025\n", "c.yaml:8: workers: must be between 0"},
		{"workers: two\n", `c.yaml:8: workers: want an integer, got "two"`},
		{"unix_socket_mode: 0999\n", `c.yaml:8: unix_socket_mode: invalid file mode "0999"`},
		{"unix_socket_mode: 1777\n", `c.yaml:8: unix_socket_mode: invalid file mode "1777"`},
		{"unix_socket_mode: [7]\n", "c.yaml:8: unix_socket_mode: want an octal file mode"},
		{"unix_socket_group: staff\n", "c.yaml:8: unix_socket_group: needs unix_socket_dir"},
		{"unix_socket_dir: /" + strings.Repeat("d", 100) + "\n", "c.yaml:8: unix_socket_dir: too long for a socket path"},
	} {
		_, err := ParseConfig("c.yaml", []byte(base+tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
