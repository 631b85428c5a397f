package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shardgate/shardgate/bench/loadgen"
)

// proxyProcess is `shardgate serve` running as a child process.
type proxyProcess struct {
	addr        string
	metricsAddr string
	dir         string // config and log; removed by stop
	cmd         *exec.Cmd
	exited      chan struct{} // closed when the process is gone
	exitErr     error         // set before exited is closed

	stopOnce sync.Once
	logTail  string // the log's last lines, kept by stop after removing dir
}

// startProxy writes cfgYAML with free loopback addresses, runs the proxy
// on it and waits until it listens.
func startProxy(ctx context.Context, bin, cfgYAML string) (*proxyProcess, error) {
	p := &proxyProcess{exited: make(chan struct{})}
	var err error
	if p.addr, err = loadgen.FreeAddr(); err != nil {
		return nil, err
	}
	if p.metricsAddr, err = loadgen.FreeAddr(); err != nil {
		return nil, err
	}
	if p.dir, err = os.MkdirTemp("", "shardgate-soak-proxy-"); err != nil {
		return nil, err
	}
	y := strings.NewReplacer(listenPlaceholder, p.addr, metricsPlaceholder, p.metricsAddr).Replace(cfgYAML)
	cfgPath := filepath.Join(p.dir, "shardgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
		os.RemoveAll(p.dir)
		return nil, err
	}
	logFile, err := os.Create(p.logPath())
	if err != nil {
		os.RemoveAll(p.dir)
		return nil, err
	}
	p.cmd = exec.Command(bin, "serve", "--config", cfgPath, "--log-level", "warn")
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// The proxy must not outlive the harness, even a killed one.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(p.dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exitedErr := make(chan error, 1)
	go func() {
		p.exitErr = p.cmd.Wait()
		logFile.Close()
		exitedErr <- p.exitErr
		close(p.exited)
	}()
	if err := loadgen.WaitListening(ctx, p.addr, exitedErr); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s serve: %w\n%s", bin, err, p.logTail)
	}
	return p, nil
}

func (p *proxyProcess) logPath() string { return filepath.Join(p.dir, "shardgate.log") }

func (p *proxyProcess) pid() int { return p.cmd.Process.Pid }

func (p *proxyProcess) dsn(db string) string {
	return "postgres://postgres@" + p.addr + "/" + db + "?sslmode=disable&connect_timeout=10"
}

// dead reports whether the process has exited, and how.
func (p *proxyProcess) dead() (bool, string) {
	select {
	case <-p.exited:
		if p.exitErr == nil {
			return true, "exited with status 0"
		}
		return true, p.exitErr.Error()
	default:
		return false, ""
	}
}

// stop ends the proxy (SIGINT stops at once; SIGKILL if it hangs), keeps
// the tail of its log and removes its directory.
func (p *proxyProcess) stop() {
	p.stopOnce.Do(func() {
		if dead, _ := p.dead(); !dead {
			p.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		p.logTail = crashOrTail(p.logPath())
		os.RemoveAll(p.dir)
	})
}

// crashOrTail returns the start of a Go crash report in the log (panic or
// fatal error, the signal and the crashing goroutine's first frames), or
// else the log's last lines; lines are cut to 300 bytes.
func crashOrTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	from := max(0, len(lines)-20)
	for i, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") || strings.HasPrefix(l, "SIG") {
			from = i
			break
		}
	}
	lines = lines[from:min(len(lines), from+20)]
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// resources is what the proxy process holds at one moment.
type resources struct {
	rss        int64 // bytes, VmRSS
	goroutines int   // go_goroutines on /metrics
	fds        int   // entries of /proc/PID/fd
}

// sample reads the proxy's resources from /proc and its metrics listener.
func (p *proxyProcess) sample(ctx context.Context) (resources, error) {
	var r resources
	var err error
	if r.rss, err = vmRSS(p.pid()); err != nil {
		return r, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid()))
	if err != nil {
		return r, err
	}
	r.fds = len(fds)
	r.goroutines, err = p.goroutines(ctx)
	return r, err
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// goroutines scrapes go_goroutines from the proxy's /metrics.
func (p *proxyProcess) goroutines(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metricsAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scraping /metrics: %w", err)
	}
	defer resp.Body.Close()
	return parseGoroutines(resp.Body)
}

func parseGoroutines(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return int(f), err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/metrics has no go_goroutines")
}
