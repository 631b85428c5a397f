package proxy

import (
	"fmt"
	"maps"
	"reflect"
	"testing"

	"github.com/shardgate/shardgate/router"
)

// TestStartupCache: clients with equal startup parameters (users and
// databases aside) get one shared map; distinct ones get their own; the
// cache stops growing at maxSharedStartups and still answers right.
func TestStartupCache(t *testing.T) {
	var sc startupCache
	server := []param{{"client_encoding", "UTF8"}}
	a := sc.settings(map[string]string{"user": "u1", "database": "d1", "application_name": "x", "client_encoding": "UTF8"}, server)
	b := sc.settings(map[string]string{"user": "u2", "database": "d2", "application_name": "x", "client_encoding": "UTF8"}, server)
	if want := map[string]string{"application_name": "SET application_name TO 'x'"}; !maps.Equal(a, want) {
		t.Fatalf("settings %v, want %v", a, want)
	}
	if reflect.ValueOf(a).Pointer() != reflect.ValueOf(b).Pointer() {
		t.Fatal("equal startup parameters got two maps")
	}
	c := sc.settings(map[string]string{"application_name": "y"}, server)
	if reflect.ValueOf(a).Pointer() == reflect.ValueOf(c).Pointer() || c["application_name"] != "SET application_name TO 'y'" {
		t.Fatalf("other startup parameters share %v", c)
	}
	for i := range 2 * maxSharedStartups {
		name := fmt.Sprint("app", i)
		if got := sc.settings(map[string]string{"application_name": name}, server); got["application_name"] != "SET application_name TO '"+name+"'" {
			t.Fatalf("startup %d: %v", i, got)
		}
	}
	if len(sc.maps) != maxSharedStartups {
		t.Fatalf("%d shared startup settings kept, want the bound %d", len(sc.maps), maxSharedStartups)
	}
}

// TestChangeSettingCopies: a client's first change copies the shared
// startup settings, which stay as they were; RESET ALL shares them again.
func TestChangeSettingCopies(t *testing.T) {
	var sc startupCache
	shared := sc.settings(map[string]string{"application_name": "x"}, nil)
	c := &client{}
	c.sess.baseline, c.sess.settings = shared, shared
	c.changeSetting(&router.Setting{Name: "search_path", SQL: "SET search_path TO 'a'"})
	c.changeSetting(&router.Setting{Name: "application_name"}) // RESET application_name
	if want := map[string]string{"application_name": "SET application_name TO 'x'"}; !maps.Equal(shared, want) {
		t.Fatalf("a client's SET changed the shared settings: %v", shared)
	}
	if want := map[string]string{"application_name": "SET application_name TO 'x'", "search_path": "SET search_path TO 'a'"}; !maps.Equal(c.sess.settings, want) {
		t.Fatalf("the client's settings: %v, want %v", c.sess.settings, want)
	}
	c.changeSetting(&router.Setting{ResetAll: true})
	if reflect.ValueOf(c.sess.settings).Pointer() != reflect.ValueOf(shared).Pointer() || c.sess.ownSettings {
		t.Fatal("RESET ALL did not go back to the shared startup settings")
	}
}
