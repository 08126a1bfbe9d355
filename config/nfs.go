package config

import (
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/blockrep/blockrep/nfsexport/export"
)

// NFS is the [nfs] table: the node's NFS server, which serves the
// [[volume.nfs]] exports of the volumes whose file system is mounted on
// this node.
type NFS struct {
	// Listen holds the TCP addresses (host:port) NFS and MOUNT are served
	// on, both on the same port. It is filled in (default
	// [DefaultNFSListen]) when the [nfs] table is present or a volume has
	// an export, and empty otherwise.
	Listen []string
	// Portmap also serves a portmapper (rpcbind: PMAP v2, rpcbind v3 and
	// v4) naming the NFS and MOUNT port, on the listen addresses and on
	// port 111 of their hosts, so that clients mount with ordinary options.
	// No system rpcbind may run on the node then.
	Portmap bool
}

// NFSExport is one [[volume.nfs]] table: a directory of the volume's file
// system exported over NFS.
type NFSExport struct {
	// Path is the exported directory relative to the root of the volume's
	// file system, cleaned ("" is the root). It cannot leave the file
	// system: ".." past the root is refused.
	Path string
	// Export is the MOUNT path clients ask for: absolute and clean, at most
	// MaxNFSExportPath bytes; by default "/" followed by the volume's name.
	// Unique among all the volumes' exports.
	Export string
	// ID is the export id written in every file handle the export gives
	// out. Never change it: clients' handles embed it, and a handle with
	// another id is stale. By default it is DefaultNFSExportID(volume
	// name, Path), which changes when the volume is renamed or Path
	// changes; set it explicitly to keep it then. Unique among all the
	// volumes' exports.
	ID uint32
	// Networks are the client networks admitted; at least one.
	Networks []netip.Prefix
	// ReadOnly refuses every change (NFS3ERR_ROFS).
	ReadOnly bool
	// Squash maps the clients' credentials: root_squash (the default),
	// no_root_squash or all_squash, as knfsd's exports(5).
	Squash export.Squash
	// AnonUID and AnonGID are the identity squashed requests run as.
	AnonUID, AnonGID uint32
	// AllowAuthNone admits AUTH_NONE calls, as the anonymous identity.
	AllowAuthNone bool
}

// NFS defaults and limits.
const (
	// DefaultNFSListen is nfs.listen's default: NFS's port on every
	// address, so that a service address (VIP) added later is served too.
	DefaultNFSListen = ":2049"
	// MaxNFSExportPath is the longest export path (MOUNT's MNTPATHLEN).
	MaxNFSExportPath = 1024
)

// Options returns the export's policy as the NFS server takes it.
func (e *NFSExport) Options() export.Options {
	return export.Options{
		ID:            e.ID,
		Path:          e.Export,
		Networks:      append([]netip.Prefix(nil), e.Networks...),
		ReadOnly:      e.ReadOnly,
		Squash:        e.Squash,
		AnonUID:       e.AnonUID,
		AnonGID:       e.AnonGID,
		AllowAuthNone: e.AllowAuthNone,
	}
}

// DefaultNFSExportID is the export id of an export whose table gives none:
// the 32-bit FNV-1a hash of the volume's name, a NUL byte and the export's
// (cleaned) path. It is the same on every node and across restarts.
func DefaultNFSExportID(volume, path string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(volume))
	h.Write([]byte{0})
	h.Write([]byte(path))
	return h.Sum32()
}

// squashNames are the values of volume.nfs.squash.
var squashNames = []string{export.RootSquash.String(), export.NoRootSquash.String(), export.AllSquash.String()}

// decodeNFSExports decodes the [[volume.nfs]] tables of the volume named
// volume.
func decodeNFSExports(ts []*table, volume string) []NFSExport {
	var out []NFSExport
	for _, t := range ts {
		out = append(out, decodeNFSExport(t, volume))
	}
	return out
}

func decodeNFSExport(t *table, volume string) NFSExport {
	e := NFSExport{Export: "/" + volume, AnonUID: export.DefaultAnonID, AnonGID: export.DefaultAnonID}
	var networks []string
	squash := export.RootSquash.String()
	id := -1
	anonUID, anonGID := int(export.DefaultAnonID), int(export.DefaultAnonID)
	t.str("path", &e.Path)
	t.str("export", &e.Export)
	t.integer("id", &id, 0, math.MaxUint32)
	_, networksSet := t.m["networks"]
	errs := len(t.p.errs)
	t.strings("networks", &networks)
	networksBad := len(t.p.errs) > errs
	t.boolean("read_only", &e.ReadOnly)
	oneOf(t, "squash", &squash, squashNames...)
	t.integer("anonuid", &anonUID, 0, math.MaxUint32)
	t.integer("anongid", &anonGID, 0, math.MaxUint32)
	t.boolean("allow_auth_none", &e.AllowAuthNone)
	t.unknown()

	e.AnonUID, e.AnonGID = uint32(anonUID), uint32(anonGID)
	e.Squash, _ = export.ParseSquash(squash) // oneOf checked it

	switch p := path.Clean("/" + e.Path); {
	case strings.HasPrefix(e.Path, "/"):
		t.p.add(t.key("path"), "%s: %q is an absolute path: give the directory relative to the root of the volume's file system (\"\" for the root)", t.key("path"), e.Path)
	case strings.ContainsRune(e.Path, 0):
		t.p.add(t.key("path"), "%s: %q holds a NUL byte", t.key("path"), e.Path)
	case escapes(e.Path):
		t.p.add(t.key("path"), "%s: %q leaves the volume's file system: \"..\" may not go above its root", t.key("path"), e.Path)
	default:
		e.Path = strings.TrimPrefix(p, "/")
	}

	switch k := t.key("export"); {
	case !strings.HasPrefix(e.Export, "/"):
		t.p.add(k, "%s: %q must start with / (it is the path clients mount, e.g. \"/%s\")", k, e.Export, volume)
	case len(e.Export) > MaxNFSExportPath:
		t.p.add(k, "%s is %d bytes, longer than the %d MOUNT allows", k, len(e.Export), MaxNFSExportPath)
	case strings.ContainsRune(e.Export, 0):
		t.p.add(k, "%s: %q holds a NUL byte", k, e.Export)
	case path.Clean(e.Export) != e.Export:
		t.p.add(k, "%s: %q is not a clean path: write %q", k, e.Export, path.Clean(e.Export))
	}

	if id >= 0 {
		e.ID = uint32(id)
	} else {
		e.ID = DefaultNFSExportID(volume, e.Path)
	}

	k := t.key("networks")
	switch {
	case networksBad:
	case !networksSet:
		t.p.add(k, `%s is required: the client networks admitted, e.g. ["10.0.0.0/24"] (["0.0.0.0/0", "::/0"] admits everyone)`, k)
	case len(networks) == 0:
		t.p.add(k, `%s is empty: give at least one client network, e.g. ["10.0.0.0/24"] (["0.0.0.0/0", "::/0"] admits everyone)`, k)
	}
	seen := map[netip.Prefix]int{}
	for i, s := range networks {
		key := k + "." + strconv.Itoa(i)
		n, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			t.p.add(key, "%s: %q is not a CIDR: want address/length, e.g. \"10.0.0.0/24\" (\"10.0.0.5/32\" for one host)", key, s)
			continue
		case n != n.Masked():
			t.p.add(key, "%s: %q has address bits set past its length /%d: write %q", key, s, n.Bits(), n.Masked().String())
			continue
		}
		if n.Addr().Is4In6() {
			// Clients are matched as IPv4 (export.Options.Admit), so this
			// would admit no one.
			hint := "write the IPv4 network"
			if n.Bits() >= 96 {
				hint = fmt.Sprintf("write %s", netip.PrefixFrom(n.Addr().Unmap(), n.Bits()-96))
			}
			t.p.add(key, "%s: %q is an IPv4-mapped IPv6 network, which matches no client (they are matched as IPv4): %s", key, s, hint)
			continue
		}
		if j, dup := seen[n]; dup {
			t.p.add(key, "%s: %q is listed twice (entries %d and %d)", key, s, j, i)
			continue
		}
		seen[n] = i
		e.Networks = append(e.Networks, n)
	}
	return e
}

// escapes reports whether the relative path p climbs above its start.
func escapes(p string) bool {
	depth := 0
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// decodeNFS decodes the [nfs] table; exports says whether a volume has
// an export.
func decodeNFS(t *table, n *NFS, exports bool) {
	if t.m == nil && !exports {
		t.unknown()
		return
	}
	listen := []string{DefaultNFSListen}
	_, listenSet := t.m["listen"]
	t.strings("listen", &listen)
	t.boolean("portmap", &n.Portmap)
	t.unknown()

	if listenSet && len(listen) == 0 {
		t.p.add(t.key("listen"), "nfs.listen is empty: give at least one address (default [%q])", DefaultNFSListen)
	}
	seen := map[string]int{}
	for i, s := range listen {
		key := t.key("listen") + "." + strconv.Itoa(i)
		if strings.HasPrefix(s, "unix:") {
			t.p.add(key, "nfs.listen: %q: NFS is served over TCP only: give host:port", s)
			continue
		}
		if err := checkHostPort(s, false); err != nil {
			t.p.add(key, "nfs.listen: %v", err)
			continue
		}
		if j, dup := seen[s]; dup {
			t.p.add(key, "nfs.listen: %q is listed twice (entries %d and %d)", s, j, i)
			continue
		}
		seen[s] = i
		n.Listen = append(n.Listen, s)
	}
}

// validateNFS checks what spans volumes and tables: export ids and paths
// are unique, and nfs.listen takes no port another service has.
// rawVols are the [[volume]] tables, to tell a given id from a derived one.
func validateNFS(p *problems, cfg *Config, nfsTable *table, rawVols []*table) {
	type where struct {
		key    string
		export string
	}
	ids := map[uint32]where{}
	paths := map[string]where{}
	for i, v := range cfg.Volumes {
		for j, e := range v.NFS {
			key := fmt.Sprintf("volume.%d.nfs.%d", i, j)
			if p.bad[key+".export"] || p.bad[key+".path"] || p.bad[key+".id"] {
				continue
			}
			if w, dup := ids[e.ID]; dup {
				hint := ""
				if !nfsIDSet(rawVols, i, j) {
					hint = " (derived from the volume's name and path: set id to tell them apart)"
				}
				p.add(key+".id", "%s.id: export id %d is also the id of %s (%s)%s", key, e.ID, w.key, w.export, hint)
			} else {
				ids[e.ID] = where{key, e.Export}
			}
			if w, dup := paths[e.Export]; dup {
				p.add(key+".export", "%s.export: %q is also the export of %s", key, e.Export, w.key)
			} else {
				paths[e.Export] = where{key, e.Export}
			}
		}
	}
	others := map[string]string{}
	for i, l := range cfg.NBD.Listen {
		if l.Network == "tcp" {
			others[l.Address] = fmt.Sprintf("nbd.listen entry %d", i)
		}
	}
	if cfg.Replication.Listen != "" {
		others[cfg.Replication.Listen] = "replication.listen"
	}
	if cfg.Cluster.Listen != "" {
		others[cfg.Cluster.Listen] = "cluster.listen"
	}
	for i, l := range cfg.NFS.Listen {
		if other, ok := others[l]; ok {
			key := nfsTable.key("listen") + "." + strconv.Itoa(i)
			p.add(key, "nfs.listen: %q is also %s: NFS needs its own port", l, other)
		}
	}
}

// nfsIDSet reports whether the j-th [[volume.nfs]] table of the i-th
// volume gives an id.
func nfsIDSet(rawVols []*table, i, j int) bool {
	if i >= len(rawVols) {
		return false
	}
	var m map[string]any
	switch ts := rawVols[i].m["nfs"].(type) {
	case []map[string]any:
		if j < len(ts) {
			m = ts[j]
		}
	case []any:
		if j < len(ts) {
			m, _ = ts[j].(map[string]any)
		}
	}
	_, set := m["id"]
	return set
}
