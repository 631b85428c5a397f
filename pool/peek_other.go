//go:build !unix

package pool

// stale cannot peek without blocking here; the CheckDelay check remains.
func (c *Conn) stale() bool { return c.Reader.Buffered() > 0 }
