package sandbox

import _ "embed"

// Schema is the social-app schema (users, posts, follows sharded by user
// id; countries as a reference table) that `shardgate dev` loads on every
// shard and the integration tests use; docker-compose loads the same file.
//
//go:embed schema.sql
var Schema string
