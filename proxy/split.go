package proxy

import (
	"encoding/binary"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/router"
)

// splitInsert runs a multi-row INSERT whose rows belong to several shards
// as one INSERT per shard, holding only that shard's rows, all committed
// or none (atomically with two_phase_commit).
func (c *client) splitInsert(u unit) error {
	inTx := c.inTransactionBlock()
	if inTx && !c.canSpread() {
		return c.refuse(errWriteInTransaction)
	}
	var parts []router.InsertPart
	var reqs [][]byte
	var rerr *pgerr.Error
	if u.query != nil {
		parts, rerr = c.srv.router.SplitInsert(string(u.query[:len(u.query)-1]), nil, nil)
		for _, p := range parts {
			reqs = append(reqs, appendMessage(nil, 'Q', append([]byte(p.SQL), 0)))
		}
	} else {
		parts, reqs, rerr = c.splitBatch()
	}
	if rerr != nil {
		return c.refuse(rerr)
	}
	shards := make([]int, len(parts))
	for i, p := range parts {
		shards[i] = p.Shard
	}
	if inTx {
		return c.writeInTransaction(shards, reqs, u, false)
	}
	return c.writeOnShards(shards, reqs, u, false)
}

// splitBatch builds each shard's self-contained unnamed extended batch:
// its INSERT, the parameter types and values it uses, and the client's
// result formats (for RETURNING).
func (c *client) splitBatch() ([]router.InsertPart, [][]byte, *pgerr.Error) {
	prep, bind, query, oidBytes := c.boundStatement()
	if prep == nil {
		return nil, nil, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "an INSERT across shards must be bound in the same batch"}
	}
	if err := c.decodeBind(bind); err != nil {
		return nil, nil, err
	}
	var oids []uint32
	if len(oidBytes) >= 2 {
		n := int(binary.BigEndian.Uint16(oidBytes))
		for i := 0; i < n && 2+4*i+4 <= len(oidBytes); i++ {
			oids = append(oids, binary.BigEndian.Uint32(oidBytes[2+4*i:]))
		}
	}
	parts, rerr := c.srv.router.SplitInsert(string(query), c.ext.params, c.ext.formats)
	if rerr != nil {
		return nil, nil, rerr
	}
	reqs := make([][]byte, len(parts))
	for i, p := range parts {
		values, formats := p.Bind(c.ext.params, c.ext.formats)
		parse := append(append([]byte{0}, p.SQL...), 0)
		parse = binary.BigEndian.AppendUint16(parse, uint16(len(p.Params)))
		for _, ci := range p.Params {
			oid := uint32(0)
			if ci < len(oids) {
				oid = oids[ci]
			}
			parse = binary.BigEndian.AppendUint32(parse, oid)
		}
		out := appendMessage(nil, 'P', parse)
		out = appendMessage(out, 'B', appendBindBody(values, formats, c.ext.results))
		out = appendMessage(out, 'D', []byte{'P', 0})
		out = appendMessage(out, 'E', []byte{0, 0, 0, 0, 0})
		reqs[i] = appendEmpty(out, 'S')
	}
	return parts, reqs, nil
}

// appendBindBody encodes an unnamed portal's Bind of the unnamed statement.
func appendBindBody(values [][]byte, formats, results []int16) []byte {
	b := []byte{0, 0}
	b = binary.BigEndian.AppendUint16(b, uint16(len(formats)))
	for _, f := range formats {
		b = binary.BigEndian.AppendUint16(b, uint16(f))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(results)))
	for _, f := range results {
		b = binary.BigEndian.AppendUint16(b, uint16(f))
	}
	return b
}
