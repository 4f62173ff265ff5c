package imap

import (
	"cmp"
	"slices"
	"strings"

	"github.com/twinbox/twinbox/store"
)

// QRESYNC (RFC 7162 section 3.2). VANISHED (EARLIER) names the UIDs of
// the client's range expunged since its mod-sequence, from the server's
// bounded memory of expunges (history.go); where that does not reach back
// far enough, every UID of the range that is not in the mailbox now: a
// superset, which the RFC allows (the client drops UIDs it does not have)
// and which is right on either node of a pair, being read from the
// replicated mailbox itself.

// qresyncParams are SELECT's (QRESYNC (uidvalidity modseq [known-uids])).
type qresyncParams struct {
	uidValidity uint32
	modseq      uint64
	known       numSet // nil: every UID
}

func (s *session) qresyncArg() (*qresyncParams, error) {
	p := &s.p
	q := &qresyncParams{}
	n := 0
	err := p.list(func() error {
		var err error
		switch n {
		case 0:
			q.uidValidity, err = p.number()
			if err == nil && q.uidValidity == 0 {
				err = bad("UIDVALIDITY is not 0")
			}
		case 1:
			q.modseq, err = p.number64()
			if err == nil && q.modseq == 0 {
				err = bad("The mod-sequence is not 0")
			}
		case 2:
			if p.peek() == '(' { // seq-match data alone is not valid here
				return bad("Known UIDs expected")
			}
			q.known, err = p.seqSet()
		case 3:
			// The sequence-match data only helps a server without
			// history find the UIDs; the full answer needs none.
			err = p.list(func() error {
				if _, err := p.seqSet(); err != nil {
					return err
				}
				if err := p.sp(); err != nil {
					return err
				}
				_, err := p.seqSet()
				return err
			})
		default:
			err = bad("Too many QRESYNC parameters")
		}
		n++
		return err
	})
	if err == nil && n < 2 {
		err = bad("QRESYNC needs a UIDVALIDITY and a mod-sequence")
	}
	return q, err
}

// resync sends what changed since the client's mod-sequence: VANISHED
// (EARLIER), then the flags of every message changed since.
func (s *session) resync(q *qresyncParams) error {
	known := q.known
	if known == nil {
		known = numSet{{1, 0}}
	}
	if v := s.vanished(known, q.modseq); v != "" {
		s.w.raw("* VANISHED (EARLIER) ").raw(v).crlf()
	}
	if len(s.sel.uids) == 0 {
		return nil
	}
	refs, err := s.resolve(numSet{{1, 0}}, true)
	if err != nil {
		return err
	}
	if refs, err = s.changedSince(refs, q.modseq); err != nil || len(refs) == 0 {
		return err
	}
	return s.fetchRefs(refs, []fetchItem{{kind: fetchUID}, {kind: fetchFlags}, {kind: fetchModSeq}})
}

// vanished is the UID set, as text, of the UIDs in set (up to the last
// UID the client can know) expunged since modseq: from the history if it
// reaches back so far, else every one not in the client's view.
func (s *session) vanished(set numSet, modseq uint64) string {
	uids := s.sel.uids
	last := s.sel.lastKnown
	var gone []store.UIDRange
	if exact, ok := s.srv.gone.since(s.sel.view.ref, s.sel.uidValidity, modseq); ok {
		for _, u := range exact {
			if u > last || !inNumSet(set, u, last) {
				continue
			}
			if _, present := slices.BinarySearch(uids, u); !present {
				gone = append(gone, store.UIDRange{Lo: u, Hi: u})
			}
		}
		return rangesText(gone)
	}
	for _, r := range set {
		lo, hi := r.lo, r.hi
		if lo == 0 {
			lo = last
		}
		if hi == 0 {
			hi = last
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		hi = min(hi, last)
		i, _ := slices.BinarySearch(uids, lo)
		for u := lo; u != 0 && u <= hi; {
			if i < len(uids) && uids[i] == u {
				i++
				u++
				continue
			}
			end := hi
			if i < len(uids) && uids[i]-1 < end {
				end = uids[i] - 1
			}
			gone = append(gone, store.UIDRange{Lo: u, Hi: end})
			if end == hi {
				break
			}
			u = end + 1
		}
	}
	return rangesText(gone)
}

// inNumSet reports whether uid is in set, "*" being last.
func inNumSet(set numSet, uid, last uint32) bool {
	for _, r := range set {
		lo, hi := r.lo, r.hi
		if lo == 0 {
			lo = last
		}
		if hi == 0 {
			hi = last
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if uid >= lo && uid <= hi {
			return true
		}
	}
	return false
}

// rangesText writes UID ranges as a sorted, merged set.
func rangesText(gone []store.UIDRange) string {
	slices.SortFunc(gone, func(a, b store.UIDRange) int { return cmp.Compare(a.Lo, b.Lo) })
	var b strings.Builder
	for k := 0; k < len(gone); {
		lo, hi := gone[k].Lo, gone[k].Hi
		for k++; k < len(gone) && gone[k].Lo <= hi+1; k++ {
			hi = max(hi, gone[k].Hi)
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(uitoa(lo))
		if hi > lo {
			b.WriteString(":" + uitoa(hi))
		}
	}
	return b.String()
}
