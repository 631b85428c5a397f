package proxy

import "testing"

// TestCancelRegistryPIDs: a process id belongs to one live client; a key
// matches only with its secret.
func TestCancelRegistryPIDs(t *testing.T) {
	var r cancelRegistry
	a, b := &client{}, &client{}
	if !r.claim(backendKey{pid: 7, secret: 1}, a) {
		t.Fatal("a free pid was refused")
	}
	if r.claim(backendKey{pid: 7, secret: 2}, b) {
		t.Fatal("a live client's pid was given again")
	}
	if r.lookup(backendKey{pid: 7, secret: 2}) != nil {
		t.Fatal("a wrong secret matched")
	}
	r.remove(backendKey{pid: 7, secret: 2})
	if r.lookup(backendKey{pid: 7, secret: 1}) != a {
		t.Fatal("a wrong secret removed the key")
	}
	r.remove(backendKey{pid: 7, secret: 1})
	if !r.claim(backendKey{pid: 7, secret: 2}, b) || r.lookup(backendKey{pid: 7, secret: 2}) != b {
		t.Fatal("a released pid was not given again")
	}
}
