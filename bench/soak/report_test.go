package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestChecksFailOnGrowth(t *testing.T) {
	o := options{bounds: defaultBounds(), duration: time.Minute}
	start := resources{rss: 30 << 20, goroutines: 40, fds: 50}
	ok := &result{start: start, peak: start, end: start, ended: true}
	if !ok.passed(o) {
		t.Fatalf("an unchanged proxy fails: %+v", ok.checks(o))
	}
	for name, r := range map[string]*result{
		"RSS":         {start: start, ended: true, end: resources{rss: 95 << 20, goroutines: 40, fds: 50}},
		"RSS peak":    {start: start, ended: true, end: start, peak: resources{rss: 543 << 20}},
		"goroutines":  {start: start, ended: true, end: resources{rss: 30 << 20, goroutines: 91, fds: 50}},
		"open files":  {start: start, ended: true, end: resources{rss: 30 << 20, goroutines: 40, fds: 101}},
		"died":        {start: start, ended: true, end: start, proxyDied: "signal: killed"},
		"no end":      {start: start},
		"final check": {start: start, ended: true, end: start, finalCheck: errors.New("refused")},
		"errors":      {start: start, ended: true, end: start, totals: totals{failures: 1}},
	} {
		if r.passed(o) {
			t.Errorf("%s: passed: %+v", name, r.checks(o))
		}
		if md := r.markdown(o); !strings.HasPrefix(md, "## Soak: FAIL") || !strings.Contains(md, "**FAIL**") {
			t.Errorf("%s: summary does not say FAIL:\n%s", name, md)
		}
	}
	// Within the bounds: 2x RSS (above start + 64 MiB here), +50 goroutines and files.
	big := resources{rss: 200 << 20, goroutines: 40, fds: 50}
	grown := &result{start: big, ended: true, end: resources{rss: 400 << 20, goroutines: 90, fds: 100}, peak: resources{rss: 712 << 20}}
	if !grown.passed(o) {
		t.Errorf("growth within the bounds fails: %+v", grown.checks(o))
	}
}

func TestParseGoroutines(t *testing.T) {
	n, err := parseGoroutines(strings.NewReader("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 123\ngo_threads 9\n"))
	if err != nil || n != 123 {
		t.Errorf("got %d, %v; want 123", n, err)
	}
	if _, err := parseGoroutines(strings.NewReader("go_threads 9\n")); err == nil {
		t.Error("no error without go_goroutines")
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-probes", "slowloris, long-expr", "-stall", "0"})
	if err != nil || strings.Join(o.probes, ",") != "slowloris,long-expr" {
		t.Errorf("got %v, %v", o.probes, err)
	}
	if o, err := parseFlags([]string{"-probes", ""}); err != nil || len(o.probes) != 0 {
		t.Errorf("-probes '': got %v, %v", o.probes, err)
	}
	for _, args := range [][]string{
		{"-probes", "slowlorris"},
		{"-op-timeout", "0s"},
		{"-max-client-conn", "10"},
		{"extra"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestErrorCode(t *testing.T) {
	body := []byte("SFATAL\x00VFATAL\x00C08P01\x00Minvalid message\x00\x00")
	if got := errorCode(body); got != "08P01" {
		t.Errorf("errorCode = %q, want 08P01", got)
	}
	if got := errorCode([]byte("Mno code\x00\x00")); got != "?" {
		t.Errorf("errorCode without C = %q, want ?", got)
	}
}
