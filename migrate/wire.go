package migrate

// The requests and replies of the import endpoints (Handler). Batches
// travel as CBOR (message bytes without base64), the rest as JSON.

// mailboxRequest asks for a mailbox to import into: POST /import/mailbox.
type mailboxRequest struct {
	User        string `json:"user"`
	Mailbox     string `json:"mailbox"`
	UIDValidity uint32 `json:"uidvalidity,omitempty"` // 0: the source has none
	Subscribe   bool   `json:"subscribe,omitempty"`
}

// mailboxReply says how the mailbox is imported into.
type mailboxReply struct {
	// Keep: messages keep the source's UIDs under UIDValidity; otherwise
	// they are appended with new UIDs.
	Keep        bool   `json:"keep"`
	UIDValidity uint32 `json:"uidvalidity"`
	// UIDNext is the mailbox's next UID on the node (0: not known). With
	// Keep, a message below it was imported before (or expunged here
	// since): a resumed import need not send it again.
	UIDNext uint32 `json:"uidnext,omitempty"`
	// Why, when not Keep though the source had a UIDVALIDITY.
	Why string `json:"why,omitempty"`
}

// batchRequest is messages of one mailbox: POST /import/messages.
type batchRequest struct {
	User        string         `cbor:"1,keyasint"`
	Mailbox     string         `cbor:"2,keyasint"`
	UIDValidity uint32         `cbor:"3,keyasint,omitempty"` // 0: append
	Messages    []batchMessage `cbor:"4,keyasint"`
}

type batchMessage struct {
	UID   uint32   `cbor:"1,keyasint,omitempty"`
	Flags []string `cbor:"2,keyasint,omitempty"`
	Date  int64    `cbor:"3,keyasint"` // Unix nanoseconds
	Raw   []byte   `cbor:"4,keyasint"`
	// Key names an appended message for its at-most-once ID: its position
	// in the source folder.
	Key string `cbor:"5,keyasint,omitempty"`
}

// batchReply counts what a batch did.
type batchReply struct {
	Imported   int      `json:"imported"`            // placed at their UIDs
	Present    int      `json:"present"`             // held from an earlier run
	Gone       int      `json:"gone"`                // expunged on the node since an earlier run
	Appended   int      `json:"appended"`            // appended with new UIDs
	Duplicates int      `json:"duplicates"`          // appended by an earlier run
	TooLarge   []uint32 `json:"too_large,omitempty"` // positions (1-based) in the batch over the node's limit
	Refused    []string `json:"refused,omitempty"`   // other messages the node refused, with why
	Bytes      int64    `json:"bytes"`               // bytes of the messages imported or appended
}

// finishRequest closes a kept-UID mailbox's import: POST /import/finish
// raises its UIDNEXT to the source's, so that no UID the source gave
// (to a message expunged there) is given again.
type finishRequest struct {
	User    string `json:"user"`
	Mailbox string `json:"mailbox"`
	UIDNext uint32 `json:"uidnext"`
}
