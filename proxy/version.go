package proxy

import (
	"cmp"
	"runtime/debug"
	"slices"
	"strings"
)

// release is set by release builds with
// -ldflags "-X github.com/shardgate/shardgate/proxy.release=v1.2.3";
// other builds are named by the module version and VCS revision that Go
// records in the binary, so a bug report always says what was running.
var release string

// Version is shardgate's version: the release, else the main module's
// version as Go stamps it from the VCS checkout (e.g.
// "v0.0.0-20261205125621-700765d12345+dirty"), else "devel" (go run, go
// test). The admin console's server_version carries it.
func Version() string {
	v := release
	if info, ok := debug.ReadBuildInfo(); ok {
		v = cmp.Or(v, info.Main.Version)
	}
	if v == "" || v == "(devel)" {
		return "devel"
	}
	return v
}

// BuildVersion is Version followed by the VCS revision, its time and the
// Go release the binary was built with, as `shardgate version` and SHOW
// VERSION print it.
func BuildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Version()
	}
	var rev, at, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	v := Version()
	var details []string
	if rev != "" && !strings.Contains(v, rev) { // a release, or a version Go did not stamp
		details = append(details, "rev "+rev+dirty)
	}
	details = append(details, at, info.GoVersion)
	return v + " (" + strings.Join(slices.DeleteFunc(details, func(s string) bool { return s == "" }), ", ") + ")"
}
