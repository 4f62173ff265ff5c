package store

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Report is what Verify found.
type Report struct {
	Applied   uint64
	Users     int
	Mailboxes int
	Messages  int
	Bodies    int   // message blobs
	Parts     int   // part blobs
	BlobBytes int64 // assembled size of bodies plus parts, as stored once
	Problems  []string
	Digest    Digest
}

// OK reports whether Verify found nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the report of a badly damaged store.
const maxProblems = 1000

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	} else if len(r.Problems) == maxProblems {
		r.Problems = append(r.Problems, "too many problems; the rest are not listed")
	}
}

// Verify checks the whole store from one snapshot: it re-hashes every blob,
// recounts references against message links and manifests, and checks every
// mailbox's invariants (UIDs ascending and below UIDNEXT, modseqs not above
// HIGHESTMODSEQ, counters matching the messages). Problems are listed in the
// report; the error is for failures to read at all.
func (s *Store) Verify(ctx context.Context) (*Report, error) {
	db, done, err := s.reader()
	if err != nil {
		return nil, err
	}
	defer done()
	snap := db.NewSnapshot()
	defer snap.Close()
	r := &Report{}
	if r.Digest, err = digestOf(snap); err != nil {
		return nil, err
	}
	r.Applied = r.Digest.Applied

	// Blobs: records, data, hashes. Bodies and parts have key spaces of
	// their own.
	bodies, err := blobRecords(snap, pBlob, r)
	if err != nil {
		return nil, err
	}
	parts, err := blobRecords(snap, pPart, r)
	if err != nil {
		return nil, err
	}
	for id, br := range parts {
		r.Parts++
		data, err := readPart(snap, id)
		if err != nil {
			r.problem("part blob %s: %v", id, err)
			continue
		}
		r.BlobBytes += int64(len(data))
		if br.Kind != blobPart {
			r.problem("part blob %s: record of kind %d", id, br.Kind)
		}
		if HashBlob(data) != id {
			r.problem("part blob %s: content does not match its hash (corrupted)", id)
		}
		if int64(len(data)) != br.Size {
			r.problem("part blob %s: %d bytes, record says %d", id, len(data), br.Size)
		}
		if br.Refs < 1 {
			r.problem("part blob %s: reference count %d", id, br.Refs)
		}
	}
	partRefs := map[BlobID]int64{}
	for id, br := range bodies {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.Bodies++
		if br.Kind != blobMessage {
			r.problem("body %s: record of kind %d", id, br.Kind)
		}
		if br.Refs < 0 {
			r.problem("body %s: negative reference count %d", id, br.Refs)
		}
		if br.Refs == 0 {
			if _, closer, err := snap.Get(zeroKey(br.ZeroAt, id)); err != nil {
				r.problem("body %s: unreferenced but not in the collection index", id)
			} else {
				closer.Close()
			}
		}
		if _, closer, err := snap.Get(metaKey(id)); err != nil {
			r.problem("body %s: metadata: %v", id, err)
		} else {
			closer.Close()
		}
		man, err := readManifest(snap, id)
		if err != nil {
			r.problem("body %s: %v", id, err)
			continue
		}
		for _, pid := range distinct(man.Refs()) {
			partRefs[pid]++
		}
		r.BlobBytes += inlineBytes(man)
		sum, size, err := man.sum(func(pid BlobID) ([]byte, error) { return readPart(snap, pid) })
		if err != nil {
			r.problem("body %s: %v", id, err)
			continue
		}
		if sum != id {
			r.problem("body %s: content does not match its hash (corrupted)", id)
		}
		if size != br.Size {
			r.problem("body %s: %d bytes, record says %d", id, size, br.Size)
		}
	}
	// Every collection index entry names an unreferenced body.
	err = hashRange(snap, nil, []byte{pZero}, []byte{pZero + 1}, func(k, _ []byte) error {
		var id BlobID
		if len(k) != 9+len(id) {
			r.problem("collection index entry with a malformed key %x", k)
			return nil
		}
		copy(id[:], k[9:])
		if br, ok := bodies[id]; !ok || br.Refs != 0 || br.ZeroAt != int64(u64(k[1:9])) {
			r.problem("collection index names body %s, which is not an unreferenced body", id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Mailboxes and their messages.
	bodyRefs := map[BlobID]int64{}
	mboxIDs := map[uint64]string{}
	users := map[string]bool{}
	err = hashRange(snap, nil, []byte{pUser}, []byte{pUser + 1}, func(k, v []byte) error {
		users[string(k[1:])] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Users = len(users)
	var boxes []struct {
		where string
		rec   mailboxRec
	}
	err = hashRange(snap, nil, []byte{pMbox}, []byte{pMbox + 1}, func(k, v []byte) error {
		user, name, ok := splitMboxKey(k)
		if !ok {
			r.problem("mailbox record with a malformed key %q", k)
			return nil
		}
		where := fmt.Sprintf("mailbox %q of user %q", name, user)
		if !users[user] {
			r.problem("%s: the user does not exist", where)
		}
		var m mailboxRec
		if err := unmarshal(v, &m); err != nil {
			r.problem("%s: record: %v", where, err)
			return nil
		}
		if other, dup := mboxIDs[m.ID]; dup {
			r.problem("%s: ID %d is also used by %s", where, m.ID, other)
		}
		mboxIDs[m.ID] = where
		boxes = append(boxes, struct {
			where string
			rec   mailboxRec
		}{where, m})
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Mailboxes = len(boxes)
	for _, b := range boxes {
		m := b.rec
		msgs, err := scanMessages(snap, m.ID, nil)
		if err != nil {
			r.problem("%s: %v", b.where, err)
			continue
		}
		var count mailboxRec
		var last uint32
		for _, mm := range msgs {
			r.Messages++
			if mm.uid <= last {
				r.problem("%s: UID %d after UID %d", b.where, mm.uid, last)
			}
			last = mm.uid
			if mm.uid >= m.UIDNext {
				r.problem("%s: UID %d is not below UIDNEXT %d", b.where, mm.uid, m.UIDNext)
			}
			if mm.rec.ModSeq > m.HighestModSeq {
				r.problem("%s: UID %d has modseq %d above HIGHESTMODSEQ %d", b.where, mm.uid, mm.rec.ModSeq, m.HighestModSeq)
			}
			br, ok := bodies[mm.rec.Body]
			if !ok {
				r.problem("%s: UID %d links to missing body %s", b.where, mm.uid, mm.rec.Body)
			} else if want := br.Size + int64(len(mm.rec.Prefix)); want != mm.rec.Size {
				r.problem("%s: UID %d has size %d, its body and prefix make %d", b.where, mm.uid, mm.rec.Size, want)
			}
			bodyRefs[mm.rec.Body]++
			rec := mm.rec
			count.count(&rec, +1)
		}
		if count.Messages != m.Messages || count.Unseen != m.Unseen || count.Deleted != m.Deleted || count.Size != m.Size {
			r.problem("%s: counters say %d messages, %d unseen, %d deleted, %d bytes; the messages make %d, %d, %d, %d",
				b.where, m.Messages, m.Unseen, m.Deleted, m.Size, count.Messages, count.Unseen, count.Deleted, count.Size)
		}
	}
	// Messages of mailboxes that no longer exist.
	err = hashRange(snap, nil, []byte{pMsg}, []byte{pMsg + 1}, func(k, v []byte) error {
		if len(k) != 13 {
			r.problem("message record with a malformed key %x", k)
			return nil
		}
		if id := u64(k[1:9]); mboxIDs[id] == "" {
			r.problem("message UID %d belongs to mailbox ID %d, which does not exist", uidOfMsgKey(k), id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Reference counts.
	for id, br := range bodies {
		if want := bodyRefs[id]; br.Refs != want {
			r.problem("body %s: reference count %d, but %d messages link to it", id, br.Refs, want)
		}
	}
	for id, br := range parts {
		if want := partRefs[id]; br.Refs != want {
			r.problem("part blob %s: reference count %d, but %d bodies refer to it", id, br.Refs, want)
		}
	}
	for id, n := range partRefs {
		if _, ok := parts[id]; !ok {
			r.problem("part blob %s: referred to by %d bodies but not stored", id, n)
		}
	}
	return r, nil
}

// blobRecords reads the blob records of one key space.
func blobRecords(snap pebble.Reader, prefix byte, r *Report) (map[BlobID]blobRec, error) {
	out := map[BlobID]blobRec{}
	err := hashRange(snap, nil, []byte{prefix}, []byte{prefix + 1}, func(k, v []byte) error {
		var id BlobID
		if len(k) != 1+len(id) {
			r.problem("blob record with a malformed key %x", k)
			return nil
		}
		copy(id[:], k[1:])
		var br blobRec
		if err := unmarshal(v, &br); err != nil {
			r.problem("blob %s: record: %v", id, err)
			return nil
		}
		out[id] = br
		return nil
	})
	return out, err
}

func inlineBytes(m Manifest) int64 {
	var n int64
	for _, s := range m.Segments {
		if !s.IsRef() {
			n += int64(len(s.Inline))
		}
	}
	return n
}
