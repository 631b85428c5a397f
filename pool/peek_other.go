//go:build !unix

package pool

// Pending cannot peek without blocking here: it sees only what Reader holds.
func (c *Conn) Pending() bool { return c.Reader.Buffered() > 0 }
