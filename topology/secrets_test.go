package topology

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:s3cret@h:5432/app", "postgres://u:xxxxx@h:5432/app"},
		{"postgres://u@h:5432/app?sslmode=require&password=s3cret", "postgres://u@h:5432/app?password=xxxxx&sslmode=require"},
		{"postgres://u@h:5432/app?sslpassword=s3cret", "postgres://u@h:5432/app?sslpassword=xxxxx"},
		{"postgres://u:s3cret@h:5432/app?password=s3cret", "postgres://u:xxxxx@h:5432/app?password=xxxxx"},
		{"postgres://u@h:5432/app?sslmode=disable", "postgres://u@h:5432/app?sslmode=disable"},
		{"postgres://u:s3c%zzret@h:5432/app", "(unparsable DSN)"},
	} {
		if got := RedactDSN(tc.dsn); got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

// TestConfigErrorsHideSecrets: a secret written where the config expects
// something else is reported by field and line, never quoted.
func TestConfigErrorsHideSecrets(t *testing.T) {
	const secret = "s3cretPw"
	head := "database: app\nkeyspace: [{range: \"-\", shard: s0}]\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"DSN as replicas", head + "shards:\n  - name: s0\n    primary: postgres://u@h:1/app\n    replicas: postgres://u:" + secret + "@h:2/app\n",
			"c.yaml:6: shards[0].replicas: want a list"},
		{"DSN with a mapping", head + "shards:\n  - postgres://u:" + secret + "@h:2/app\n",
			"c.yaml:4: shards[0]: want a mapping"},
		{"password with a slash", head + "shards:\n  - name: s0\n    primary: postgres://u:" + secret + "/x@h:1/app\n",
			"c.yaml:5: shards[0].primary: shard \"s0\": invalid DSN: invalid port after host"},
		{"bad escape in a password", head + "shards:\n  - name: s0\n    primary: postgres://u:%z" + secret + "@h:1/app\n",
			"c.yaml:5: shards[0].primary: shard \"s0\": invalid DSN: invalid URL escape"},
		{"users as a string", head + "auth: {type: md5, users: \"app:" + secret + "\"}\n",
			"c.yaml:3: auth.users: want a list"},
		{"user as a string", head + "auth:\n  type: md5\n  users: [\"" + secret + "\"]\n",
			"c.yaml:5: auth.users[0]: want a mapping"},
		{"password as a list", head + "auth:\n  users: [{name: app, password: [" + secret + "]}]\n",
			"auth.users[0].password: want a single value"},
		{"auth as a string", head + "auth: " + secret + "\n", "c.yaml:3: auth: want a mapping"},
		{"whole file a string", "postgres://u:" + secret + "@h:1/app\n", "c.yaml:1: want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("config accepted")
			}
			// "/x" is the piece of the password after the slash, "%z" the escape.
			if msg := err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, "%z") {
				t.Errorf("the error quotes the secret:\n%s", msg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n%s\ndoes not contain %q", err, tc.want)
			}
		})
	}
	// Fields without secrets still quote what they got.
	if _, err := ParseConfig("c.yaml", []byte(head+"pool: {size: lots}\n")); err == nil || !strings.Contains(err.Error(), `got "lots"`) {
		t.Errorf("pool.size error %v, want the value quoted", err)
	}
}
