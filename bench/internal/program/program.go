// Package program is the main function bench programs share: their flags,
// a context that Ctrl-C or SIGTERM ends, and the exit status (2 for bad
// flags, 130 when interrupted, 1 when the run failed).
package program

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Main parses os.Args with parse and runs run; failed names the run in
// the log line of a failure ("load test failed").
func Main[O any](name, failed string, parse func([]string) (O, error), run func(context.Context, O, *slog.Logger) error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o, log)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case err != nil && interrupted:
		log.Warn("interrupted; no report written", "err", err)
		os.Exit(130)
	case err != nil:
		log.Error(failed, "err", err)
		os.Exit(1)
	}
}
