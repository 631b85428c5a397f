// Package shardgate holds what the whole repository shares: the sandbox
// schema. The proxy itself lives in the proxy, router, topology and pool
// packages; the CLI in cmd/shardgate.
package shardgate

import _ "embed"

// SandboxSchema is testdata/schema.sql, the social-app schema (users, posts,
// follows sharded by user id; countries as a reference table) that the
// sandbox loads on every shard and the integration tests use.
//
//go:embed testdata/schema.sql
var SandboxSchema string

// Version is shardgate's version, set at build time with
// -ldflags "-X github.com/shardgate/shardgate.Version=...".
var Version = "dev"
