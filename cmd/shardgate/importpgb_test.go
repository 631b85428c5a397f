package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
)

// TestImportPgBouncerServesTheSamePools runs a representative
// pgbouncer.ini in a real PgBouncer, converts it with import-pgbouncer,
// runs the result in shardgate on the same address, and asks both the same
// questions: who may log in, with which password, which pool mode, and how
// many server connections a database's clients get before the next waits.
func TestImportPgBouncerServesTheSamePools(t *testing.T) {
	ctx := t.Context()
	cluster, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	// carol is known only to the server: both poolers find her through
	// auth_query. PgBouncer looks her up as auth_user pgb_lookup (1.18
	// crashes when auth_user is the database's forced user); shardgate as
	// the DSN's user.
	direct, err := pgconn.Connect(ctx, cluster.Shards[0].Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, "SET password_encryption = 'md5'; CREATE ROLE carol LOGIN PASSWORD 'carolpw'; CREATE ROLE pgb_lookup LOGIN SUPERUSER").ReadAll(); err != nil {
		t.Fatal(err)
	}
	direct.Close(ctx)
	dir, cred := pgbouncerDir(t)
	listen := freeAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	ini := filepath.Join(dir, "pgbouncer.ini")
	template, err := os.ReadFile("../../testdata/pgbouncer/pgbouncer.ini")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("PORT", strconv.Itoa(cluster.Shards[0].Primary.Port), "LISTEN", port, "DIR", dir).Replace(string(template))
	writeFile(t, ini, text, cred)
	userlist, err := os.ReadFile("../../testdata/pgbouncer/userlist.txt")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "userlist.txt"), string(userlist), cred)

	stopPgBouncer := startPgBouncer(t, ini, listen, cred)
	pgbouncer := probePooler(t, listen)
	stopPgBouncer()

	config := filepath.Join(dir, "shardgate.yaml")
	if out, err := runCLI(t, ctx, "import-pgbouncer", ini, "-o", config); err != nil {
		t.Fatalf("import-pgbouncer: %v\n%s", err, out)
	}
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, context.Background(), "serve", config, "--log-level", "error")
		done <- err
	}()
	if !listening(listen, 20*time.Second) {
		t.Fatal("shardgate serve did not start")
	}
	shardgate := probePooler(t, listen)
	t.Logf("pgbouncer %+v\nshardgate %+v", pgbouncer, shardgate)
	if pgbouncer != shardgate {
		t.Errorf("PgBouncer and the converted shardgate differ:\npgbouncer %+v\nshardgate %+v", pgbouncer, shardgate)
	}
	if shardgate.serverConns != 12 || shardgate.poolMode != "transaction" || !shardgate.badPasswordRefused || !shardgate.serverUserLogsIn {
		t.Errorf("the pools are not the ini's: %+v", shardgate)
	}
	admin, err := pgconn.Connect(ctx, "postgres://admin:adminpw@"+listen+"/shardgate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	admin.Exec(ctx, "SHUTDOWN").ReadAll()
	admin.Close(ctx)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("shardgate did not stop")
	}
}

// poolerAnswers is what a client and an operator see of one pooler.
type poolerAnswers struct {
	query              string // alice's answer to SELECT current_user, 1+1
	badPasswordRefused bool
	serverUserLogsIn   bool   // a user only auth_query knows
	poolMode           string // SHOW POOLS
	serverConns        int    // server connections in use with 13 clients in transactions
	waiting            int    // clients waiting meanwhile
}

func probePooler(t *testing.T, addr string) poolerAnswers {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var a poolerAnswers
	alice := "postgres://alice:alicepw@" + addr + "/app?sslmode=disable"
	conn, err := pgconn.Connect(ctx, alice)
	if err != nil {
		t.Fatalf("%s: alice: %v", addr, err)
	}
	res, err := conn.Exec(ctx, "SELECT current_user, 1+1").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	a.query = string(res[0].Rows[0][0]) + "," + string(res[0].Rows[0][1])
	conn.Close(ctx)
	_, err = pgconn.Connect(ctx, "postgres://alice:wrong@"+addr+"/app?sslmode=disable")
	a.badPasswordRefused = err != nil && strings.Contains(err.Error(), "password authentication failed")
	if carol, err := pgconn.Connect(ctx, "postgres://carol:carolpw@"+addr+"/app?sslmode=disable"); err == nil {
		_, err = carol.Exec(ctx, "SELECT 1").ReadAll()
		a.serverUserLogsIn = err == nil
		carol.Close(ctx)
	}

	admin, err := pgconn.Connect(ctx, "postgres://admin:adminpw@"+addr+"/pgbouncer?sslmode=disable")
	if err != nil {
		// shardgate's console is database "shardgate".
		admin, err = pgconn.Connect(ctx, "postgres://admin:adminpw@"+addr+"/shardgate?sslmode=disable")
	}
	if err != nil {
		t.Fatalf("%s: admin console: %v", addr, err)
	}
	defer admin.Close(context.Background())

	// default_pool_size is 20 but the database's pool_size=12 wins; the
	// 13th client waits (reserve_pool_timeout is 2.5 s, longer than this).
	var holders []*pgconn.PgConn
	defer func() {
		for _, c := range holders {
			c.Close(context.Background())
		}
	}()
	for range 13 {
		c, err := pgconn.Connect(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		holders = append(holders, c)
	}
	for _, c := range holders[:12] {
		if _, err := c.Exec(ctx, "BEGIN; SELECT 1").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	blocked := make(chan error, 1)
	go func() { _, err := holders[12].Exec(ctx, "SELECT 1").ReadAll(); blocked <- err }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		a.poolMode, a.serverConns, a.waiting = pools(t, admin)
		if a.waiting > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range holders[:12] {
		if _, err := c.Exec(ctx, "COMMIT").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-blocked; err != nil {
		t.Fatalf("%s: the waiting client: %v", addr, err)
	}
	return a
}

// pools sums SHOW POOLS over the app database's rows.
func pools(t *testing.T, admin *pgconn.PgConn) (mode string, active, waiting int) {
	t.Helper()
	res, err := admin.Exec(t.Context(), "SHOW POOLS").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, f := range res[0].FieldDescriptions {
		col[f.Name] = i
	}
	for _, row := range res[0].Rows {
		if string(row[col["database"]]) != "app" {
			continue
		}
		mode = string(row[col["pool_mode"]])
		n, _ := strconv.Atoi(string(row[col["sv_active"]]))
		active += n
		n, _ = strconv.Atoi(string(row[col["cl_waiting"]]))
		waiting += n
	}
	return mode, active, waiting
}

// pgbouncerDir makes a directory PgBouncer can read and write; PgBouncer
// refuses to run as root, so as root it runs as the postgres OS user.
func pgbouncerDir(t *testing.T) (string, *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sg-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() != 0 {
		return dir, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs the postgres OS user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func writeFile(t *testing.T, path, text string, cred *syscall.Credential) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
}

// startPgBouncer runs PgBouncer on ini until the returned function stops it.
func startPgBouncer(t *testing.T, ini, listen string, cred *syscall.Credential) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer" // Debian's, off a non-root PATH
	}
	cmd := exec.Command(bin, ini)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgbouncer (.ci/run installs it): %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(ini), "pgbouncer.log"))
			t.Logf("pgbouncer's log:\n%s%s", out.String(), log)
		}
	})
	if !listening(listen, 20*time.Second) {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(ini), "pgbouncer.log"))
		t.Fatalf("pgbouncer did not start:\n%s%s", out.String(), log)
	}
	return stop
}

// listening waits up to timeout for addr to accept connections.
func listening(addr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) || !errors.Is(err, syscall.ECONNREFUSED) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
