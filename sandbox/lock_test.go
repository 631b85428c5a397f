package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLock: a second Lock on the same directory fails at once, naming the
// holder and its pid; once released, the directory can be locked again.
func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "sandbox") // Lock creates it
	unlock, err := Lock(dir, "first holder")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir, "second holder")
	inUse, ok := errors.AsType[*InUseError](err)
	if !ok || inUse.PID != os.Getpid() || inUse.Holder != "first holder" {
		t.Fatalf("second Lock: %v, want an InUseError naming the first holder and pid %d", err, os.Getpid())
	}
	if want := fmt.Sprintf("sandbox %s is in use by first holder (pid %d)", dir, os.Getpid()); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock, err = Lock(dir, "second holder")
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock()
}

// TestFixedPortsAndStopStarted: BasePort gives consecutive ports that
// restarts and AddShard follow, a taken port is refused with the port
// named, and StopStarted stops only the servers its Start started.
func TestFixedPortsAndStopStarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	base := freeRange(t, 4)
	opts := Options{
		Dir: t.TempDir(), Shards: 2, Replicas: NoReplicas, BasePort: base, Fast: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	if got := ports(c); got[0] != base || got[1] != base+1 {
		t.Fatalf("ports %v, want %d and %d", got, base, base+1)
	}
	sh, err := c.AddShard(ctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	if sh.Primary.Port != base+2 {
		t.Errorf("added shard's port %d, want %d", sh.Primary.Port, base+2)
	}

	// A taken port: a new sandbox on the same ports starts nothing.
	_, err = Start(ctx, Options{Dir: t.TempDir(), Shards: 1, Replicas: NoReplicas, BasePort: base, Fast: true})
	if err == nil || !strings.Contains(err.Error(), "port "+strconv.Itoa(base)+" ") || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("Start on taken ports: %v, want the port named as in use", err)
	}

	// s0 keeps running (as a crashed dev would leave it); the next Start
	// starts the others, and StopStarted stops just those.
	if err := c.StopServer(ctx, c.Shards[1].Primary); err != nil {
		t.Fatal(err)
	}
	if err := c.StopServer(ctx, sh.Primary); err != nil {
		t.Fatal(err)
	}
	opts.BasePort = base + 100 // ignored on reuse
	again, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := ports(again); got[0] != base || got[1] != base+1 || got[2] != base+2 {
		t.Fatalf("ports after restart %v, want %d..%d", got, base, base+2)
	}
	if err := again.StopStarted(); err != nil {
		t.Fatal(err)
	}
	for _, s := range again.servers() {
		if running := again.Running(ctx, s); running != (s.Name == "s0-primary") {
			t.Errorf("%s running = %v after StopStarted; want only s0-primary, which Start found running", s.Name, running)
		}
	}
}

// freeRange finds n consecutive free loopback ports.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for base := 20000 + os.Getpid()%20000; base < 65000; base += 97 {
		free := true
		for p := base; p < base+n && free; p++ {
			free = portFree(p)
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}
