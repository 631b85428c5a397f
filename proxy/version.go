package proxy

// Version is shardgate's version, reported by SHOW VERSION and in
// server_version; set at build time with
// -ldflags "-X github.com/shardgate/shardgate/proxy.Version=...".
var Version = "dev"
