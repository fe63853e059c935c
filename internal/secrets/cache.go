package secrets

import (
	"container/list"
	"crypto/cipher"
)

// keyCache keeps the ciphers of the most recently used value keys. It is
// not safe for concurrent use: the Keyring guards it with its mutex.
type keyCache struct {
	max   int
	order *list.List // of *cacheEntry, most recently used first
	byID  map[int64]*list.Element
}

type cacheEntry struct {
	id   int64
	aead cipher.AEAD
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, order: list.New(), byID: make(map[int64]*list.Element)}
}

func (c *keyCache) get(id int64) (cipher.AEAD, bool) {
	e, ok := c.byID[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).aead, true
}

// put adds or refreshes id, evicting the least recently used beyond max.
// An evicted cipher is dropped; the raw key it was built from was already
// overwritten.
func (c *keyCache) put(id int64, a cipher.AEAD) {
	if e, ok := c.byID[id]; ok {
		e.Value.(*cacheEntry).aead = a
		c.order.MoveToFront(e)
		return
	}
	c.byID[id] = c.order.PushFront(&cacheEntry{id: id, aead: a})
	for c.order.Len() > c.max {
		e := c.order.Back()
		c.order.Remove(e)
		ent := e.Value.(*cacheEntry)
		delete(c.byID, ent.id)
		ent.aead = nil
	}
}

func (c *keyCache) len() int { return c.order.Len() }
