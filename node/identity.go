package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/raid"
	"github.com/blockrep/blockrep/replica"
	"github.com/blockrep/blockrep/storeid"
)

// Store identities (package storeid): every volume's store carries the
// volume's identity in a block after its data, and meta.db records it
// under the volume's state (storeIdentityKey). Opening a volume gathers
// the facts (what meta.db records, what the store is and what its identity
// block holds), asks storeid.Decide, and carries the verdict out:
//
//   - Create: the store is made (a sparse file, or a new array), then the
//     facts are gathered again.
//   - Initialise, Accept: the store gets a new generation: trailer first
//     (FUA and flush), meta.db after, so that a crash in between leaves a
//     trailer one generation ahead, which Decide accepts.
//   - Inconsistent: the replica is marked Inconsistent without a
//     generation (replica.Store.Invalidate) before anything else is
//     written; then as Initialise. The replica opens as a full-sync
//     target that the cluster never promotes.
//   - Unprotected: served without an identity.
//   - Refuse: the node does not start; the error names the path and the
//     way out (the key, and exit status 2, for a configuration error).
//
// While serving, the node checks every storeCheckInterval that each plain
// store's path still names the open file (raid.File.CheckLink): a store
// deleted or replaced under it fails every request from then on, wrapping
// raid.ErrStoreGone and EIO, as a failed disk.

// storeIdentityKey is the meta state key of a volume's store identity: JSON
// {"store": UUID, "gen": UUID}.
const storeIdentityKey = "store.identity"

// storeCheckInterval is how often the node checks that its stores' paths
// still name the open files.
const storeCheckInterval = time.Second

// identityRecord is the JSON under storeIdentityKey.
type identityRecord struct {
	Store uuid.UUID `json:"store"`
	Gen   uuid.UUID `json:"gen"`
}

// storeIdentity is what a volume's open found and decided, for status.
type storeIdentity struct {
	verdict storeid.Verdict
	id      *storeid.Identity // nil when Unprotected

	mu   sync.Mutex
	gone string
}

// loadRecord returns what meta.db records about volume name, nil when it
// has no record.
func loadRecord(db *meta.DB, name string) (*storeid.Record, error) {
	rec, err := db.Volume(name)
	if errors.Is(err, meta.ErrNoVolume) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	vu, err := uuid.Parse(rec.UUID)
	if err != nil {
		return nil, fmt.Errorf("meta: volume %q: uuid %q: %w", name, rec.UUID, err)
	}
	r := &storeid.Record{Volume: vu, Size: rec.Size}
	var raw []byte
	if err := db.ViewVolume(name, func(tx *meta.VolumeTx) error { raw = tx.Get(storeIdentityKey); return nil }); err != nil {
		return nil, err
	}
	if raw != nil {
		var ir identityRecord
		if err := json.Unmarshal(raw, &ir); err != nil {
			return nil, fmt.Errorf("meta: volume %q: store identity %q: %w", name, raw, err)
		}
		r.Identity = &storeid.Identity{Store: ir.Store, Gen: ir.Gen}
	}
	return r, nil
}

// saveIdentity records the store identity of volume name in meta.db.
func saveIdentity(db *meta.DB, name string, id storeid.Identity) error {
	b, err := json.Marshal(identityRecord{Store: id.Store, Gen: id.Gen})
	if err != nil {
		return err
	}
	return db.UpdateVolume(name, func(tx *meta.VolumeTx) error { return tx.Put(storeIdentityKey, b) })
}

// storeFacts starts the facts of a volume from its configuration.
func (n *Node) storeFacts(vc config.Volume, rec *storeid.Record) storeid.Facts {
	f := storeid.Facts{
		Volume: vc.Name, Path: vc.Path, ConfigFile: n.cfg.Source, Record: rec,
		ConfigSize: vc.Size, Replicated: n.cfg.Replicated(), ReadOnly: vc.ReadOnly,
	}
	if vc.RAID != nil {
		f.Kind, f.Path = storeid.Array, vc.RAID.Spec()
	}
	return f
}

// inspectFile gathers the facts of a volume on a file or block device
// without writing anything: the store is opened read-only and closed again.
func (n *Node) inspectFile(vc config.Volume, rec *storeid.Record) (storeid.Facts, error) {
	f := n.storeFacts(vc, rec)
	st, err := os.Stat(vc.Path)
	if errors.Is(err, fs.ErrNotExist) {
		f.Missing = true
		dir := filepath.Dir(vc.Path)
		// The data directory is made before any store, with its parents.
		made := strings.HasPrefix(n.cfg.Node.DataDir+"/", strings.TrimSuffix(dir, "/")+"/")
		if fi, err := os.Stat(dir); !made && (err != nil || !fi.IsDir()) {
			// Nothing can be created there either: a path error,
			// whatever the record says.
			return f, volumeConfigError(n.cfg, vc, "path", fmt.Sprintf("the directory of %s does not exist: create it or mount its file system", vc.Path))
		}
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	if st.Mode().IsRegular() && st.Size() == 0 {
		return f, nil // an empty file: RawSize 0, nothing to read
	}
	file, err := raid.OpenFile(vc.Path, raid.FileOptions{ReadOnly: true})
	if err != nil {
		return f, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	defer file.Close()
	if file.IsBlockDevice() {
		f.Kind = storeid.BlockDevice
	}
	f.RawSize = file.Size()
	readTrailer(&f, file)
	return f, nil
}

// readTrailer reads the store's identity block into f.
func readTrailer(f *storeid.Facts, store block.Device) {
	off, ok := storeid.TrailerOffset(f.Record, f.RawSize)
	if !ok {
		f.Found = storeid.NotRead
		return
	}
	t, found, err := storeid.ReadTrailer(store, off)
	f.Trailer, f.Found = t, found
	if err != nil {
		f.Detail = err.Error()
	}
}

// refusal is the error of a Refuse verdict: a configuration error naming
// the key when the verdict names one (exit status 2), else the reason.
func (n *Node) refusal(vc config.Volume, v storeid.Verdict) error {
	if v.Key != "" {
		return volumeConfigError(n.cfg, vc, v.Key, v.Reason)
	}
	return fmt.Errorf("volume %q: refusing its store: %s", vc.Name, v.Reason)
}

// volumeConfigError is a *config.Error about key of volume vc.
func volumeConfigError(cfg *config.Config, vc config.Volume, key, msg string) error {
	k := volumeKey(cfg, vc) + "." + key
	return &config.Error{File: cfg.Source, Key: k, Msg: fmt.Sprintf("%s: volume %q: %s", k, vc.Name, msg)}
}

// volumeKey is the configuration key of volume vc's table ("volume.0").
func volumeKey(cfg *config.Config, vc config.Volume) string {
	for i, v := range cfg.Volumes {
		if v.Name == vc.Name {
			return "volume." + strconv.Itoa(i)
		}
	}
	return "volume"
}

// openFileVolume opens the store of a volume on a file or block device:
// gathers the facts, decides, and carries the verdict out.
func (n *Node) openFileVolume(vc config.Volume) (*volume, error) {
	rec, err := loadRecord(n.meta, vc.Name)
	if err != nil {
		return nil, err
	}
	f, err := n.inspectFile(vc, rec)
	if err != nil {
		return nil, err
	}
	v := storeid.Decide(f)
	if v.Action == storeid.Create {
		if err := raid.CreateFile(vc.Path, v.Size+storeid.BlockSize); err != nil {
			return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
		}
		n.log.Info("store created", "volume", vc.Name, "path", vc.Path, "reason", v.Reason)
		if f, err = n.inspectFile(vc, rec); err != nil {
			return nil, err
		}
		v = storeid.Decide(f)
	}
	if v.Action == storeid.Refuse || v.Action == storeid.Create {
		return nil, n.refusal(vc, v)
	}
	if v.Grow {
		if err := raid.GrowFile(vc.Path, v.Size+storeid.BlockSize); err != nil {
			return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
		}
	}
	file, err := raid.OpenFile(vc.Path, raid.FileOptions{ReadOnly: vc.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	vol, err := n.settle(vc, rec, f, v, file)
	if err != nil {
		_ = file.Close()
		return nil, err
	}
	vol.file = file
	n.log.Info("volume opened", "volume", vc.Name, "uuid", vol.rec.UUID, "path", vol.rec.Path,
		"size", vol.rec.Size, "size_human", config.FormatSize(vol.rec.Size), "read_only", vc.ReadOnly,
		"block_device", file.IsBlockDevice(), "tls", string(vc.TLS))
	return vol, nil
}

// settle carries a verdict out on the opened store: checks that the store
// is still what was inspected, marks the replica Inconsistent when told
// to, writes the new identity (trailer, then meta.db) and records the
// volume. It returns the volume with its store and record set.
func (n *Node) settle(vc config.Volume, rec *storeid.Record, f storeid.Facts, v storeid.Verdict, store block.Device) (*volume, error) {
	log := n.log.With("volume", vc.Name, "path", f.Path)
	// The store may have changed between the inspection and the open
	// (or grown just now, on purpose): what the verdict relies on must
	// still hold.
	again := f
	again.RawSize = store.Size()
	readTrailer(&again, store)
	changed := again.RawSize != f.RawSize || again.Found != f.Found || again.Trailer != f.Trailer
	if v.Grow {
		// Grown just now: the new bytes are a hole.
		changed = again.RawSize != v.Size+storeid.BlockSize
	}
	if changed {
		return nil, fmt.Errorf("volume %q: store %s changed while it was being opened (size %d, now %d; identity block %v, now %v): start again",
			vc.Name, f.Path, f.RawSize, again.RawSize, f.Found, again.Found)
	}
	dev, err := storeid.NewDevice(store, v.Size, v.Action != storeid.Unprotected)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	switch v.Action {
	case storeid.Unprotected:
		log.Warn("store served without an identity: a blank or replaced store cannot be recognised", "reason", v.Reason)
	case storeid.Inconsistent:
		log.Error("STORE DOES NOT HOLD THE VOLUME'S DATA: the replica comes up Inconsistent (never promoted) for a full sync from a peer", "reason", v.Reason)
		if err := replica.NewStore(n.meta, vc.Name).Invalidate(); err != nil {
			return nil, fmt.Errorf("volume %q: marking the replica Inconsistent: %w", vc.Name, err)
		}
	case storeid.Initialise:
		log.Info("store identity initialised", "reason", v.Reason)
	}
	prev, prevErr := n.meta.Volume(vc.Name)
	mrec, err := n.meta.EnsureVolume(vc.Name, f.Path, v.Size)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", vc.Name, err)
	}
	if prevErr == nil && prev.Path != mrec.Path {
		log.Warn("volume backing path changed", "uuid", mrec.UUID, "was", prev.Path)
	}
	ident := &storeIdentity{verdict: v}
	if v.Action != storeid.Unprotected && !(v.Action == storeid.Accept && vc.ReadOnly) {
		id, err := n.writeIdentity(vc, rec, v, dev, mrec)
		if err != nil {
			return nil, fmt.Errorf("volume %q: store %s: %w", vc.Name, f.Path, err)
		}
		ident.id = &id
	} else if v.Action == storeid.Accept {
		ident.id = rec.Identity
	}
	return &volume{cfg: vc, store: dev, rec: mrec, ident: ident}, nil
}

// writeIdentity writes a new generation of the store's identity: the
// trailer durably first, then meta.db. An Accept keeps the store UUID;
// Initialise and Inconsistent draw a new one.
func (n *Node) writeIdentity(vc config.Volume, rec *storeid.Record, v storeid.Verdict, dev *storeid.Device, mrec meta.VolumeRecord) (storeid.Identity, error) {
	vu, err := uuid.Parse(mrec.UUID)
	if err != nil {
		return storeid.Identity{}, err
	}
	node, _ := uuid.Parse(n.meta.NodeID())
	id := storeid.Identity{Store: uuid.New(), Gen: uuid.New()}
	var prev uuid.UUID
	if rec != nil && rec.Identity != nil {
		prev = rec.Identity.Gen
		if v.Action == storeid.Accept {
			id.Store = rec.Identity.Store
		}
	}
	t := storeid.Trailer{Volume: vu, Store: id.Store, Gen: id.Gen, Prev: prev, Node: node, Size: v.Size, Written: time.Now().UTC(), Name: vc.Name}
	if err := dev.WriteTrailer(t); err != nil {
		return storeid.Identity{}, err
	}
	if err := saveIdentity(n.meta, vc.Name, id); err != nil {
		return storeid.Identity{}, fmt.Errorf("recording the store identity: %w", err)
	}
	return id, nil
}

// status is the volume's api.StoreStatus.
func (s *storeIdentity) status() *api.StoreStatus {
	if s == nil {
		return nil
	}
	st := &api.StoreStatus{Identity: "unprotected", Opened: s.verdict.Action.String(), Reason: s.verdict.Reason}
	if s.id != nil {
		st.Identity, st.StoreUUID, st.Generation = "protected", s.id.Store.String(), s.id.Gen.String()
	}
	s.mu.Lock()
	st.Gone = s.gone
	s.mu.Unlock()
	return st
}

// watchStores checks every storeCheckInterval, until ctx ends, that each
// plain store's path still names its open file; a store found gone fails
// its I/O from then on (raid.File.CheckLink) and is logged once and shown
// in status.
func (n *Node) watchStores(ctx context.Context) {
	t := time.NewTicker(storeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, v := range n.volumes {
			n.checkStore(v)
		}
	}
}

// checkStore checks one volume's store once: a plain store found gone
// fails all I/O; an array's member found gone is failed (the array goes on
// degraded).
func (n *Node) checkStore(v *volume) {
	if v.raid != nil {
		for _, err := range v.raid.arr.CheckLinks() {
			n.log.Error("raid: MEMBER GONE: its file was deleted or replaced while open; the member is failed", "volume", v.cfg.Name, "err", err)
		}
		return
	}
	if v.file == nil || v.ident == nil {
		return
	}
	err := v.file.CheckLink()
	if err == nil {
		return
	}
	if !errors.Is(err, raid.ErrStoreGone) {
		n.log.Debug("store link check failed", "volume", v.cfg.Name, "err", err)
		return
	}
	v.ident.mu.Lock()
	first := v.ident.gone == ""
	if first {
		v.ident.gone = err.Error()
	}
	v.ident.mu.Unlock()
	if first {
		n.log.LogAttrs(context.Background(), slog.LevelError, "STORE GONE: its file was deleted or replaced while open; every request fails from now on (a failed disk)",
			slog.String("volume", v.cfg.Name), slog.String("path", v.cfg.Path), slog.String("err", err.Error()))
	}
}

// ForgetVolume makes the node forget volume name: its record in meta.db
// and everything under it (generation identifiers, bitmaps, the store
// identity). The node must not be running (meta.db is locked then). The
// next start initialises the volume again from what its store holds, as a
// new volume: the way out storeid's refusals give for a standalone volume
// whose store is not the recorded one (a replicated volume then comes up
// Inconsistent, for a full sync). blockrepd -forget-volume runs it.
func ForgetVolume(cfg *config.Config, name string, logger *slog.Logger) error {
	path := filepath.Join(cfg.Node.DataDir, meta.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("forget volume %q: %w", name, err)
	}
	db, err := meta.Open(path)
	if err != nil {
		return err
	}
	rec, err := db.Volume(name)
	if err == nil {
		err = db.DeleteVolume(name)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("forget volume %q: %w", name, err)
	}
	logger.Warn("volume forgotten: the next start initialises it again from what its store holds",
		"volume", name, "uuid", rec.UUID, "path", rec.Path, "size", rec.Size, "meta", path)
	return nil
}
