package api

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// RAIDStatus is the state of a volume stored on a local RAID array
// (VolumeStatus.RAID).
type RAIDStatus struct {
	// Level is "raid1", "raid10", "raid5" or "raid6".
	Level string `json:"level"`
	// UUID is the array's UUID, as in its superblocks.
	UUID string `json:"uuid"`
	// Health is "optimal", "degraded" or "failed".
	Health string `json:"health"`
	// ChunkSize and MemberSize are in bytes; Copies is the near copies of
	// a raid10 array (0 for the other levels).
	ChunkSize  int64 `json:"chunk_size"`
	MemberSize int64 `json:"member_size"`
	Copies     int   `json:"copies,omitempty"`
	// Events is the superblocks' event counter.
	Events uint64 `json:"events"`
	// BitmapRegion is the bytes of the array one write-intent bit stands
	// for: what a crash or a member's short absence resyncs at least.
	BitmapRegion int64 `json:"bitmap_region"`
	// Members are the member slots, in role order; never nil.
	Members []RAIDMember `json:"members"`
	// Spares are the hot spares' paths (mdadm --detail's "spare"
	// devices), in the order the array takes them; never nil.
	Spares []string `json:"spares"`
	// Progress is the running rebuild or scrub, or else the last one; nil
	// when none has run since the array was opened.
	Progress *RAIDProgress `json:"progress,omitempty"`
	// Scrub is what the last finished scrub found; nil when none finished
	// since the array was opened.
	Scrub *RAIDScrubResult `json:"scrub,omitempty"`
	// LastScrub is when the last scrub (the operator's or periodic) that
	// did not fail completed, as the node records it across restarts; an
	// array never scrubbed counts from the node's first start with it.
	// NextScrub is when the periodic scrub (raid_scrub_interval) is due:
	// LastScrub plus the interval, nil when the periodic scrub is off; a
	// time past means it waits for the array to be optimal and idle. Both
	// RFC 3339.
	LastScrub *time.Time `json:"last_scrub,omitempty"`
	NextScrub *time.Time `json:"next_scrub,omitempty"`
	// Recovery is what opening the array did to make it consistent.
	Recovery RAIDRecovery `json:"recovery"`
}

// RAIDMember is one member slot of an array.
type RAIDMember struct {
	Index int `json:"index"`
	// Path is the member's file or device; "" for an empty slot.
	Path string `json:"path"`
	// State is "in_sync", "faulty" or "rebuilding".
	State string `json:"state"`
	// Error is why the member failed, if it did.
	Error string `json:"error,omitempty"`
	// CorrectedReadErrors is how many of the member's read errors were
	// repaired from redundancy, halved every hour; past 20 the member is
	// failed (md's max_corrected_read_errors).
	CorrectedReadErrors int `json:"corrected_read_errors,omitempty"`
}

// RAIDProgress is a rebuild or scrub of an array.
type RAIDProgress struct {
	// Op is "rebuild" or "scrub"; State is "running", "done", "canceled"
	// or "failed".
	Op    string `json:"op"`
	State string `json:"state"`
	// Member is the member being rebuilt; -1 for a scrub.
	Member int `json:"member"`
	// DoneBytes and TotalBytes are member bytes.
	DoneBytes  int64 `json:"done_bytes"`
	TotalBytes int64 `json:"total_bytes"`
	// BytesPerSecond is the average rate of the run; ETASeconds the time
	// left at that rate (0 when unknown or not running).
	BytesPerSecond float64 `json:"bytes_per_second"`
	ETASeconds     float64 `json:"eta_seconds"`
	// Repair is set on a scrub that repairs what it finds.
	Repair bool `json:"repair,omitempty"`
	// Error is why the run stopped, if it failed or was canceled.
	Error string `json:"error,omitempty"`
}

// RAIDScrubResult is what a scrub found and did.
type RAIDScrubResult struct {
	Repair     bool  `json:"repair"`
	Stripes    int64 `json:"stripes"`
	Skipped    int64 `json:"skipped"`
	Mismatches int64 `json:"mismatches"`
	Repaired   int64 `json:"repaired"`
	ReadErrors int64 `json:"read_errors"`
	// Error is why the scrub stopped early, if it did.
	Error string `json:"error,omitempty"`
}

// RAIDRecovery is what opening the array did.
type RAIDRecovery struct {
	// Created: the array was created when the node opened it.
	Created bool `json:"created,omitempty"`
	// Dirty: the array had not been shut down cleanly.
	Dirty bool `json:"dirty"`
	// BitmapCorrupt: the write-intent bitmap was unreadable and the whole
	// array was resynced.
	BitmapCorrupt bool `json:"bitmap_corrupt,omitempty"`
	// DirtyRegions is how many write-intent regions were resynced, and
	// ResyncReadBytes the member bytes that read.
	DirtyRegions    int   `json:"dirty_regions"`
	ResyncReadBytes int64 `json:"resync_read_bytes"`
	// Resynced are the stale members brought back from the bitmap;
	// Rebuilding those rebuilt in full in the background.
	Resynced   []int `json:"resynced,omitempty"`
	Rebuilding []int `json:"rebuilding,omitempty"`
}

// RAIDController is what a backend with RAID volumes also does; the routes
// answer 404 on a daemon that has none of it:
//
//	POST /v1/volumes/{volume}/raid/fail     {"member": 1}                 200 {}
//	POST /v1/volumes/{volume}/raid/remove   {"member": 1}                 200 {}
//	POST /v1/volumes/{volume}/raid/remove-spare {"path": "/dev/sdf"}      200 {}
//	                                                                      or {"configured": true}
//	POST /v1/volumes/{volume}/raid/add      {"path": "/dev/sde"}          200 {"member": 1}
//	                                                                      or {"member": -1, "spare": true}
//	POST /v1/volumes/{volume}/raid/replace  {"member": 1, "path": "..."}  200 {}
//	POST /v1/volumes/{volume}/raid/scrub    {"repair": false}             200 {}
//
// A volume that is not on a RAID array answers 409, a member index out of
// range or a relative path 400, a change the array's state refuses (failing
// the last redundancy, removing a member that is not faulty, a rebuild or
// scrub already running) 409. add and replace start the rebuild of the new
// member in the background, scrub the scrub: both show in the status. add
// to an array with no empty slot adds a hot spare (as mdadm --add), which
// the array takes into the slot of a member that fails. remove-spare takes
// a hot spare out of the array and zeroes its superblock; a path that is not
// one of the array's spares answers 409, naming the spares. configured
// says the spare is in the volume's raid_spares: the configuration is the
// desired state, and the node adds it back at its next start.
type RAIDController interface {
	// RAIDFail marks the member faulty (mdadm --fail).
	RAIDFail(ctx context.Context, volume string, member int) error
	// RAIDRemove takes the faulty member out of its slot (mdadm --remove).
	RAIDRemove(ctx context.Context, volume string, member int) error
	// RAIDRemoveSpare takes the hot spare at path out of the array (mdadm
	// --remove of a spare) and zeroes its superblock; configured reports
	// that the volume's configuration names it in raid_spares, so that it
	// comes back at the node's next start.
	RAIDRemoveSpare(ctx context.Context, volume, path string) (configured bool, err error)
	// RAIDAdd puts the device at path in the lowest empty slot, returns
	// the slot and starts rebuilding it; with no empty slot it adds the
	// device as a hot spare and returns -1.
	RAIDAdd(ctx context.Context, volume, path string) (member int, err error)
	// RAIDReplace puts the device at path in the faulty or removed slot
	// member and starts rebuilding it.
	RAIDReplace(ctx context.Context, volume string, member int, path string) error
	// RAIDScrub starts a scrub of the array; repair rewrites what does
	// not check out.
	RAIDScrub(ctx context.Context, volume string, repair bool) error
}

// RAIDMemberRequest is the body of POST .../raid/fail and .../raid/remove.
type RAIDMemberRequest struct {
	Member *int `json:"member"`
}

// RAIDPathRequest is the body of POST .../raid/add and .../raid/remove-spare.
type RAIDPathRequest struct {
	Path string `json:"path"`
}

// RAIDReplaceRequest is the body of POST .../raid/replace.
type RAIDReplaceRequest struct {
	Member *int   `json:"member"`
	Path   string `json:"path"`
}

// RAIDScrubRequest is the body of POST .../raid/scrub.
type RAIDScrubRequest struct {
	Repair bool `json:"repair"`
}

// RAIDMemberReply is the answer of POST .../raid/add.
type RAIDMemberReply struct {
	// Member is the slot the device went into; -1 for a spare.
	Member int `json:"member"`
	// Spare: the array had no empty slot and the device is a hot spare.
	Spare bool `json:"spare,omitempty"`
}

// RAIDRemoveSpareReply is the answer of POST .../raid/remove-spare.
type RAIDRemoveSpareReply struct {
	// Configured: the spare is in the volume's raid_spares, and the node
	// adds it back at its next start unless it is taken out of there too.
	Configured bool `json:"configured,omitempty"`
}

var raidVerbs = []string{"fail", "remove", "remove-spare", "add", "replace", "scrub"}

// raidRoutes adds the RAIDController routes to mux.
func raidRoutes(mux *http.ServeMux, b Backend) {
	rc, ok := b.(RAIDController)
	if !ok {
		for _, v := range raidVerbs {
			mux.HandleFunc("/v1/volumes/{volume}/raid/"+v, func(w http.ResponseWriter, _ *http.Request) {
				writeError(w, http.StatusNotFound, "this daemon has no RAID support")
			})
		}
		return
	}
	member := func(m *int) (int, error) {
		if m == nil {
			return 0, invalidf("member is required: the index of a member slot")
		}
		if *m < 0 {
			return 0, invalidf("member %d is negative", *m)
		}
		return *m, nil
	}
	path := func(p string) error {
		if strings.TrimSpace(p) == "" {
			return invalidf("path is required: the member file or block device")
		}
		if !strings.HasPrefix(p, "/") {
			return invalidf("path %q is relative: give an absolute path", p)
		}
		return nil
	}
	mux.Handle("/v1/volumes/{volume}/raid/fail", command("raid fail", func(ctx context.Context, volume string, req RAIDMemberRequest) error {
		m, err := member(req.Member)
		if err != nil {
			return err
		}
		return rc.RAIDFail(ctx, volume, m)
	}))
	mux.Handle("/v1/volumes/{volume}/raid/remove", command("raid remove", func(ctx context.Context, volume string, req RAIDMemberRequest) error {
		m, err := member(req.Member)
		if err != nil {
			return err
		}
		return rc.RAIDRemove(ctx, volume, m)
	}))
	mux.Handle("/v1/volumes/{volume}/raid/remove-spare", call("raid remove-spare", func(ctx context.Context, volume string, req RAIDPathRequest) (RAIDRemoveSpareReply, error) {
		if err := path(req.Path); err != nil {
			return RAIDRemoveSpareReply{}, err
		}
		configured, err := rc.RAIDRemoveSpare(ctx, volume, req.Path)
		return RAIDRemoveSpareReply{Configured: err == nil && configured}, err
	}))
	mux.Handle("/v1/volumes/{volume}/raid/add", call("raid add", func(ctx context.Context, volume string, req RAIDPathRequest) (RAIDMemberReply, error) {
		if err := path(req.Path); err != nil {
			return RAIDMemberReply{}, err
		}
		m, err := rc.RAIDAdd(ctx, volume, req.Path)
		return RAIDMemberReply{Member: m, Spare: err == nil && m < 0}, err
	}))
	mux.Handle("/v1/volumes/{volume}/raid/replace", command("raid replace", func(ctx context.Context, volume string, req RAIDReplaceRequest) error {
		m, err := member(req.Member)
		if err != nil {
			return err
		}
		if err := path(req.Path); err != nil {
			return err
		}
		return rc.RAIDReplace(ctx, volume, m, req.Path)
	}))
	mux.Handle("/v1/volumes/{volume}/raid/scrub", command("raid scrub", func(ctx context.Context, volume string, req RAIDScrubRequest) error {
		return rc.RAIDScrub(ctx, volume, req.Repair)
	}))
}

var _ RAIDController = (*Client)(nil)

// RAIDFail asks the daemon to fail a member of volume's array.
func (c *Client) RAIDFail(ctx context.Context, volume string, member int) error {
	return c.command(ctx, volume, "raid/fail", RAIDMemberRequest{Member: &member})
}

// RAIDRemove asks the daemon to remove a faulty member of volume's array.
func (c *Client) RAIDRemove(ctx context.Context, volume string, member int) error {
	return c.command(ctx, volume, "raid/remove", RAIDMemberRequest{Member: &member})
}

// RAIDRemoveSpare asks the daemon to remove the hot spare at path from
// volume's array; configured reports that the spare is in the volume's
// raid_spares (and comes back at the daemon's next start).
func (c *Client) RAIDRemoveSpare(ctx context.Context, volume, path string) (bool, error) {
	var reply RAIDRemoveSpareReply
	err := c.call(ctx, volume, "raid/remove-spare", RAIDPathRequest{Path: path}, &reply)
	return reply.Configured, err
}

// RAIDAdd asks the daemon to add the device at path to volume's array; it
// returns the slot the device went into, -1 when it became a hot spare.
func (c *Client) RAIDAdd(ctx context.Context, volume, path string) (int, error) {
	var reply RAIDMemberReply
	err := c.call(ctx, volume, "raid/add", RAIDPathRequest{Path: path}, &reply)
	return reply.Member, err
}

// RAIDReplace asks the daemon to put the device at path in slot member of
// volume's array.
func (c *Client) RAIDReplace(ctx context.Context, volume string, member int, path string) error {
	return c.command(ctx, volume, "raid/replace", RAIDReplaceRequest{Member: &member, Path: path})
}

// RAIDScrub asks the daemon to scrub volume's array.
func (c *Client) RAIDScrub(ctx context.Context, volume string, repair bool) error {
	return c.command(ctx, volume, "raid/scrub", RAIDScrubRequest{Repair: repair})
}
