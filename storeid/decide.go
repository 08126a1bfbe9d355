package storeid

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Kind is what a store is.
type Kind uint8

const (
	// File: a regular file; it can grow to make room for the trailer.
	File Kind = iota
	// BlockDevice: a block device; its size is fixed.
	BlockDevice
	// Array: a local RAID array (raid.DiskArray); its size is fixed.
	Array
)

var kindNames = [...]string{File: "file", BlockDevice: "block-device", Array: "array"}

// String names the kind as in scenario files.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// prose names the kind in reasons.
func (k Kind) prose() string { return strings.ReplaceAll(k.String(), "-", " ") }

// Record is what meta.db records about a volume.
type Record struct {
	// Volume is the volume's UUID.
	Volume uuid.UUID
	// Size is the volume's data size, fixed for life.
	Size int64
	// Identity is the store identity meta.db recorded; nil for a volume
	// recorded before stores carried one (or by a first start that
	// stopped between making the record and recording the identity).
	Identity *Identity
}

// Identity is the part of a trailer meta.db records.
type Identity struct {
	Store, Gen uuid.UUID
}

// Facts is everything Decide looks at for one volume at open.
type Facts struct {
	// Volume is the volume name; Path its store's path (for an array, its
	// member spec); ConfigFile the node's configuration file. All three
	// only appear in reasons.
	Volume, Path, ConfigFile string
	// Kind is what the store is.
	Kind Kind
	// Record is meta.db's record of the volume; nil before the volume's
	// first initialisation.
	Record *Record
	// Missing: for a File or BlockDevice nothing exists at Path; for an
	// Array none of the members holds an array superblock.
	Missing bool
	// RawSize is the store's whole size in bytes (0 when Missing).
	RawSize int64
	// ConfigSize is the volume's size setting; 0 when not set. For an
	// Array it is the size of member files and is not compared.
	ConfigSize int64
	// Found is what was read at TrailerOffset; Trailer the trailer when
	// Valid, Detail the reason for Corrupt, Newer and Unreadable.
	Found   Found
	Trailer Trailer
	Detail  string
	// Replicated: the volume has peers, so an Inconsistent store can get
	// a full sync from an UpToDate one. ReadOnly: the store is opened
	// read-only (nothing, not even a trailer, is written).
	Replicated, ReadOnly bool
}

// Action is what the node does with a store.
type Action uint8

const (
	// Create the store (a sparse file of Size+BlockSize bytes, or a new
	// array), then gather the facts again and decide again.
	Create Action = iota
	// Initialise a new store identity: a new store UUID and generation,
	// trailer written at Size, then recorded in meta.db (with the volume
	// record on a first initialisation). The data is kept as it is.
	Initialise
	// Accept the store as meta.db records it; a writable open writes a new
	// generation (trailer first, then meta.db).
	Accept
	// Unprotected: serve Size bytes and write no identity (a read-only
	// store, or one recorded before identities that cannot make room for
	// one). A blank or replaced store cannot be recognised.
	Unprotected
	// Inconsistent: the store does not hold the data meta.db describes.
	// The replica is marked Inconsistent without a generation (a full sync
	// from an UpToDate peer follows; it is never promoted meanwhile), and
	// only then does the store get a new identity as with Initialise.
	Inconsistent
	// Refuse to open the volume: the reason names the path and the way
	// out.
	Refuse
)

var actionNames = [...]string{Create: "Create", Initialise: "Initialise", Accept: "Accept", Unprotected: "Unprotected", Inconsistent: "Inconsistent", Refuse: "Refuse"}

// String names the action.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Verdict is Decide's answer.
type Verdict struct {
	Action Action
	// Size is the volume's data size: what the store exports, and where
	// its trailer starts.
	Size int64
	// Grow says to extend the regular file to Size+BlockSize first.
	Grow bool
	// Key is the configuration key ("size") when the refusal is a
	// configuration error, empty otherwise.
	Key string
	// Reason says why, in one line; for Refuse it names the path and the
	// way out.
	Reason string
}

// TrailerOffset is where the trailer of a store of rawSize bytes belongs:
// at the recorded data size when meta.db has a record, else in the store's
// last block (a store initialised before, whose record is gone). ok is
// false when the store is too short to hold it there.
func TrailerOffset(rec *Record, rawSize int64) (off int64, ok bool) {
	if rec != nil {
		return rec.Size, rawSize >= rec.Size+BlockSize
	}
	return rawSize - BlockSize, rawSize >= BlockSize
}

// Decide says what the node does with a volume's store at open. It is a
// pure function of the facts. The rules, in order (the first that applies
// decides):
//
//  1. Missing store, volume recorded: Refuse, naming the path — the file
//     system that holds it may simply not be mounted, and a store is
//     created only at the volume's first initialisation. The way out for a
//     replaced disk is a blank store (truncate -s SIZE PATH), which rule 8
//     turns into Inconsistent. Exception: a replicated array whose members
//     hold no superblock (all replaced) is created, and rule 8 applies.
//  2. Missing store, no record (first initialisation): Create it when the
//     size is known (size, or an array); a read-only volume or a missing
//     file without size is refused.
//  3. No record, store present: a read-only volume is served Unprotected
//     as it is. A valid trailer where the last block of the store is
//     means an initialised store whose record is gone (meta.db lost or
//     removed with -forget-volume): Initialise, keeping its data size. A
//     file is adopted (Grow) when it has the configured size, or any size
//     without one; a file of size+BlockSize with a blank last block is
//     one an earlier first start created. A block device or array gives
//     its last block to the trailer: refused when that block is not blank
//     (it may be data). Any other size is refused naming the key "size".
//  4. The trailer could not be read (I/O error): Refuse.
//  5. Recorded before stores carried an identity: a regular file of the
//     recorded size is grown and Initialised, as is any store with room
//     whose trailer block is blank or names this volume (a first start
//     that stopped before recording the identity); a read-only store, or
//     a block device or array of exactly the recorded size, is served
//     Unprotected.
//  6. Read-only volume: Accept a matching trailer (rule 11), Refuse
//     anything else (nothing may be written to repair it).
//  7. The store is too short for the recorded size and trailer (truncated,
//     or replaced by a smaller one): Inconsistent (replicated, and a file
//     that can grow back) or Refuse.
//  8. Blank or corrupt trailer (a new, wiped or foreign disk): Inconsistent
//     if replicated, else Refuse — a standalone volume has no peer to copy
//     the data from.
//  9. A trailer of a newer format: Refuse.
//  10. A trailer of another volume: Refuse, whatever the mode: a full sync
//     into it would destroy that volume's data.
//  11. This volume's trailer. Another store UUID (a different store of the
//     volume: an old disk put back) or another data size: Inconsistent if
//     replicated, else Refuse. The recorded generation, or a trailer whose
//     previous generation is the recorded one (the open that wrote it
//     stopped before meta.db recorded it): Accept. Any other generation is
//     a stale copy (restored from a backup or snapshot): Inconsistent if
//     replicated, else Refuse.
//
// An Inconsistent verdict never keeps what the replica recorded: the node
// marks it Inconsistent before it writes the new identity, so that a crash
// in between comes back to the same verdict.
func Decide(f Facts) Verdict {
	rec := f.Record
	// Rules 1 and 2: no store.
	if f.Missing {
		if rec != nil {
			if f.Kind == Array {
				if f.Replicated && !f.ReadOnly {
					return Verdict{Action: Create, Size: rec.Size, Reason: fmt.Sprintf(
						"rule 1: no member of %s holds an array superblock (all replaced): a new array is created and comes up Inconsistent for a full sync from a peer", f.Path)}
				}
				return refuse(fmt.Sprintf("rule 1: no member of %s holds an array superblock, and meta.db records volume %q (uuid %s, %d bytes) on it: "+
					"the members are blank or not the array's; put the array's members back, or start the volume over on blank members: %s",
					f.Path, f.Volume, rec.Volume, rec.Size, forget(f)))
			}
			return refuse(fmt.Sprintf("rule 1: store %s of volume %q is missing, and meta.db records the volume (uuid %s, %d bytes) on it: "+
				"mount the file system that holds it or put it back (a store is created only when a volume is first initialised); %s",
				f.Path, f.Volume, rec.Volume, rec.Size, replacedWayOut(f, rec.Size)))
		}
		switch {
		case f.ReadOnly:
			return Verdict{Action: Refuse, Key: "path", Reason: fmt.Sprintf("rule 2: store %s of read-only volume %q does not exist: there is nothing to serve", f.Path, f.Volume)}
		case f.Kind == Array:
			return Verdict{Action: Create, Reason: "rule 2: first initialisation: no member holds an array superblock, creating a new array"}
		case f.Kind == File && f.ConfigSize > 0:
			return Verdict{Action: Create, Size: f.ConfigSize, Reason: fmt.Sprintf(
				"rule 2: first initialisation: creating %s (%d bytes of data and the %d-byte store identity)", f.Path, f.ConfigSize, BlockSize)}
		}
		return Verdict{Action: Refuse, Key: "size", Reason: fmt.Sprintf(
			"rule 2: store %s of volume %q does not exist and size is not set: set size to create it, or point path at the existing file or device", f.Path, f.Volume)}
	}

	// Rule 3: first initialisation of an existing store.
	if rec == nil {
		return decideFirst(f)
	}

	// Rule 4: the trailer block cannot be read.
	if f.Found == Unreadable {
		return refuse(fmt.Sprintf("rule 4: reading the store identity of volume %q from %s failed (%s): the store is failing; replace it (%s)",
			f.Volume, f.Path, f.Detail, replacedWayOut(f, rec.Size)))
	}

	// Rule 5: recorded before stores carried an identity.
	if rec.Identity == nil {
		if v, ok := decideLegacy(f); ok {
			return v
		}
	}

	matches := f.Found == Valid && f.Trailer.Volume == rec.Volume && rec.Identity != nil && f.Trailer.Store == rec.Identity.Store &&
		f.Trailer.Size == rec.Size && (f.Trailer.Gen == rec.Identity.Gen || f.Trailer.Prev == rec.Identity.Gen)

	// Rule 6: a read-only store is never repaired.
	if f.ReadOnly {
		if matches {
			return Verdict{Action: Accept, Size: rec.Size, Reason: "rule 6: read-only: the store carries the identity meta.db records"}
		}
		return refuse(fmt.Sprintf("rule 6: read-only volume %q: store %s does not carry the identity meta.db records (%s); nothing is written to a read-only store: put the volume's store back",
			f.Volume, f.Path, describe(f)))
	}

	// Rule 7: too short for the recorded size and the trailer.
	if f.RawSize < rec.Size+BlockSize {
		what := fmt.Sprintf("store %s of volume %q has %d bytes, fewer than the %d the volume's %d bytes of data and its identity need: truncated, or replaced by a smaller or blank one",
			f.Path, f.Volume, f.RawSize, rec.Size+BlockSize, rec.Size)
		if f.Replicated && f.Kind == File {
			return Verdict{Action: Inconsistent, Size: rec.Size, Grow: true, Reason: "rule 7: " + what + "; its data is not trusted: it grows back and gets a full sync from a peer"}
		}
		if f.Replicated {
			return refuse("rule 7: " + what + "; a " + f.Kind.prose() + " cannot grow: give the volume a store of at least that size")
		}
		return refuse("rule 7: " + what + "; " + standaloneWayOut(f))
	}

	switch f.Found {
	case Blank, Corrupt, NotRead:
		// Rule 8: no identity at all.
		what := fmt.Sprintf("store %s of volume %q carries no store identity (%s): a new, wiped or foreign disk, not the one meta.db records", f.Path, f.Volume, describe(f))
		if f.Replicated {
			return Verdict{Action: Inconsistent, Size: rec.Size, Reason: "rule 8: " + what + "; full sync from a peer"}
		}
		return refuse("rule 8: " + what + "; " + standaloneWayOut(f))
	case Newer:
		// Rule 9.
		return refuse(fmt.Sprintf("rule 9: store %s of volume %q: %s", f.Path, f.Volume, f.Detail))
	}

	// Rule 10: another volume's store.
	t := f.Trailer
	if t.Volume != rec.Volume {
		return refuse(fmt.Sprintf("rule 10: store %s holds another volume: %s; meta.db records volume %q as uuid %s: refusing to overwrite it "+
			"(check path; to serve that data as volume %q: %s; if it may go, blank the store's identity: %s)",
			f.Path, describe(f), f.Volume, rec.Volume, f.Volume, forget(f), blankWayOut(f, rec.Size)))
	}

	// Rule 11: this volume's trailer.
	var what string
	switch {
	case rec.Identity == nil:
		what = "meta.db records no store identity, and the legacy rules did not apply"
	case t.Store != rec.Identity.Store:
		what = fmt.Sprintf("it is another store of this volume (store %s, meta.db records %s): an old or copied disk", t.Store, rec.Identity.Store)
	case t.Size != rec.Size:
		what = fmt.Sprintf("its identity says %d bytes of data, meta.db records %d", t.Size, rec.Size)
	case t.Gen == rec.Identity.Gen:
		return Verdict{Action: Accept, Size: rec.Size, Reason: "rule 11: the store carries the identity and generation meta.db records"}
	case t.Prev == rec.Identity.Gen:
		return Verdict{Action: Accept, Size: rec.Size, Reason: fmt.Sprintf(
			"rule 11: the store's generation %s follows the recorded %s: the last open stopped before meta.db recorded it", t.Gen, rec.Identity.Gen)}
	default:
		what = fmt.Sprintf("it is a stale copy of this store (generation %s, written %s; meta.db records generation %s): restored from a backup or snapshot?",
			t.Gen, t.Written.Format("2006-01-02T15:04:05Z"), rec.Identity.Gen)
	}
	msg := fmt.Sprintf("store %s of volume %q: %s", f.Path, f.Volume, what)
	if f.Replicated {
		return Verdict{Action: Inconsistent, Size: rec.Size, Reason: "rule 11: " + msg + "; its data is not trusted: full sync from a peer"}
	}
	return refuse("rule 11: " + msg + "; " + standaloneWayOut(f))
}

// decideFirst is rule 3: no record, the store exists.
func decideFirst(f Facts) Verdict {
	if f.Found == Unreadable {
		return refuse(fmt.Sprintf("rule 3: reading the last block of store %s of volume %q failed (%s): the store is failing", f.Path, f.Volume, f.Detail))
	}
	ours := f.Found == Valid && f.Trailer.Size == f.RawSize-BlockSize
	if f.ReadOnly {
		size := f.RawSize
		if ours {
			size = f.Trailer.Size
		}
		return Verdict{Action: Unprotected, Size: size, Reason: "rule 3: first initialisation of a read-only volume: served as it is; no store identity is written"}
	}
	if ours && (f.ConfigSize == 0 || f.Kind == Array || f.ConfigSize == f.Trailer.Size) {
		return Verdict{Action: Initialise, Size: f.Trailer.Size, Reason: fmt.Sprintf(
			"rule 3: the store carries the identity of volume %q (uuid %s, written %s) but meta.db has no record: its data is kept",
			f.Trailer.Name, f.Trailer.Volume, f.Trailer.Written.Format("2006-01-02T15:04:05Z"))}
	}
	if f.Kind == File {
		switch {
		case f.ConfigSize == 0 || f.ConfigSize == f.RawSize:
			return Verdict{Action: Initialise, Size: f.RawSize, Grow: true, Reason: fmt.Sprintf(
				"rule 3: first initialisation: the existing file is the volume's data (%d bytes); it grows by the %d-byte store identity", f.RawSize, BlockSize)}
		case f.ConfigSize+BlockSize == f.RawSize && f.Found == Blank:
			return Verdict{Action: Initialise, Size: f.ConfigSize, Reason: "rule 3: first initialisation of a file an earlier start created"}
		}
		return Verdict{Action: Refuse, Key: "size", Reason: fmt.Sprintf(
			"rule 3: %s has %d bytes but size is %d: a volume never changes size; set size to %d (or leave it out) to use the file as it is, or point path at another file",
			f.Path, f.RawSize, f.ConfigSize, f.RawSize)}
	}
	size := f.RawSize - BlockSize
	if size < BlockSize {
		return refuse(fmt.Sprintf("rule 3: %s %s has %d bytes: too small to hold data and the %d-byte store identity", f.Kind.prose(), f.Path, f.RawSize, BlockSize))
	}
	if f.Kind == BlockDevice && f.ConfigSize != 0 && f.ConfigSize != size {
		return Verdict{Action: Refuse, Key: "size", Reason: fmt.Sprintf(
			"rule 3: block device %s has %d bytes, of which the last %d hold the store identity: the volume has %d; size is %d: set it to %d or leave it out",
			f.Path, f.RawSize, BlockSize, size, f.ConfigSize, size)}
	}
	if f.Found != Blank {
		return refuse(fmt.Sprintf("rule 3: the last %d bytes of %s %s, where the store identity goes, are not blank (%s): it may hold data that uses the whole %s; "+
			"if it is free, zero them: %s", BlockSize, f.Kind.prose(), f.Path, describe(f), f.Kind.prose(), zeroLastBlock(f)))
	}
	return Verdict{Action: Initialise, Size: size, Reason: fmt.Sprintf(
		"rule 3: first initialisation: the %s exports %d bytes; its last %d hold the store identity", f.Kind.prose(), size, BlockSize)}
}

// decideLegacy is rule 5; ok is false when it does not apply.
func decideLegacy(f Facts) (Verdict, bool) {
	rec := f.Record
	switch {
	case f.RawSize == rec.Size && f.Kind == File && !f.ReadOnly:
		return Verdict{Action: Initialise, Size: rec.Size, Grow: true, Reason: fmt.Sprintf(
			"rule 5: the volume was recorded before stores carried an identity: the file grows by %d bytes to hold one", BlockSize)}, true
	case f.RawSize == rec.Size && f.ReadOnly:
		return Verdict{Action: Unprotected, Size: rec.Size, Reason: "rule 5: the volume was recorded before stores carried an identity, and nothing is written to a read-only store: served without one"}, true
	case f.RawSize == rec.Size:
		return Verdict{Action: Unprotected, Size: rec.Size, Reason: fmt.Sprintf(
			"rule 5: the volume was recorded before stores carried an identity and this %s has no room for one: a blank or replaced store cannot be recognised", f.Kind.prose())}, true
	case f.ReadOnly:
		return Verdict{}, false
	case f.RawSize >= rec.Size+BlockSize && (f.Found == Blank || f.Found == Valid && f.Trailer.Volume == rec.Volume && f.Trailer.Size == rec.Size):
		return Verdict{Action: Initialise, Size: rec.Size, Reason: "rule 5: a first initialisation that stopped before recording the store identity: initialising it"}, true
	}
	return Verdict{}, false
}

func refuse(reason string) Verdict { return Verdict{Action: Refuse, Reason: reason} }

// describe says what was found where the trailer belongs.
func describe(f Facts) string {
	switch f.Found {
	case Valid:
		t := f.Trailer
		return fmt.Sprintf("identity of volume %q uuid %s, store %s, written by node %s at %s", t.Name, t.Volume, t.Store, t.Node, t.Written.Format("2006-01-02T15:04:05Z"))
	case Blank:
		return "the identity block is blank"
	case NotRead:
		return "no identity block"
	}
	if f.Detail != "" {
		return f.Detail
	}
	return f.Found.String()
}

// replacedWayOut tells how to give a volume a new, blank store.
func replacedWayOut(f Facts, size int64) string {
	if !f.Replicated {
		return "to start the volume over with no data: " + forget(f)
	}
	switch f.Kind {
	case File:
		return fmt.Sprintf("for a replaced disk create a blank store: truncate -s %d %s (it then gets a full sync from a peer)", size, f.Path)
	case BlockDevice:
		return "for a replaced disk give it a blank device at that path (it then gets a full sync from a peer)"
	}
	return "for replaced disks give the array blank members (a new array is made; it gets a full sync from a peer)"
}

// standaloneWayOut tells how to recover a standalone volume whose store is
// not the recorded one.
func standaloneWayOut(f Facts) string {
	return "the volume is not replicated, so no peer can copy its data back: put the volume's store back at that path (mount its file system, restore it), or, to keep what the store holds now as the volume's data, " + forget(f)
}

// blankWayOut tells how to wipe a store's identity.
func blankWayOut(f Facts, size int64) string {
	if f.Kind == File {
		return fmt.Sprintf("truncate -s 0 %[1]s; truncate -s %[2]d %[1]s", f.Path, size)
	}
	return zeroLastBlock(f)
}

// zeroLastBlock is the command that zeroes a device's last block.
func zeroLastBlock(f Facts) string {
	return fmt.Sprintf("dd if=/dev/zero of=%s bs=%d seek=%d count=1 oflag=direct", f.Path, BlockSize, f.RawSize/BlockSize-1)
}

// forget is the command that makes the node forget a volume.
func forget(f Facts) string {
	cfg := f.ConfigFile
	if cfg == "" {
		cfg = "CONFIG"
	}
	return fmt.Sprintf("blockrepd -config %s -forget-volume %s (then it is initialised again from what its store holds)", cfg, f.Volume)
}
