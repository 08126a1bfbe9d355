package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/blockrep/blockrep/nbd"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeRAIDBackend is fakeBackend with RAIDController.
type fakeRAIDBackend struct {
	fakeBackend
}

func (f *fakeRAIDBackend) RAIDFail(ctx context.Context, volume string, member int) error {
	return f.record("RAIDFail(%q, %d)", volume, member)
}

func (f *fakeRAIDBackend) RAIDRemove(ctx context.Context, volume string, member int) error {
	return f.record("RAIDRemove(%q, %d)", volume, member)
}

// RAIDRemoveSpare reports /dev/sdf as a configured spare.
func (f *fakeRAIDBackend) RAIDRemoveSpare(ctx context.Context, volume, path string) (bool, error) {
	return path == "/dev/sdf", f.record("RAIDRemoveSpare(%q, %q)", volume, path)
}

func (f *fakeRAIDBackend) RAIDAdd(ctx context.Context, volume, path string) (int, error) {
	return 2, f.record("RAIDAdd(%q, %q)", volume, path)
}

func (f *fakeRAIDBackend) RAIDReplace(ctx context.Context, volume string, member int, path string) error {
	return f.record("RAIDReplace(%q, %d, %q)", volume, member, path)
}

func (f *fakeRAIDBackend) RAIDScrub(ctx context.Context, volume string, repair bool) error {
	return f.record("RAIDScrub(%q, %v)", volume, repair)
}

// rawPost posts body to path on socket and returns the reply and its code.
func rawPost(t *testing.T, socket, path, body string) (string, int) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://blockrepd"+path, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp.StatusCode
}

func TestRAIDRoutes(t *testing.T) {
	conflict := fmt.Errorf("volume %q is not on a RAID array: %w", "vol0", ErrConflict)
	notFound := fmt.Errorf("volume %q: %w", "vol9", ErrNotFound)
	tests := []struct {
		name     string
		path     string
		body     string
		cmdErr   error
		wantCode int
		wantBody string // the error message, or the reply
		wantCall string
	}{
		{name: "fail", path: "/v1/volumes/vol0/raid/fail", body: `{"member": 1}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDFail("vol0", 1)`},
		{name: "fail member 0 of the only volume", path: "/v1/volumes/_/raid/fail", body: `{"member": 0}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDFail("", 0)`},
		{name: "fail without member", path: "/v1/volumes/vol0/raid/fail", body: `{}`, wantCode: 400, wantBody: `raid fail: member is required: the index of a member slot`},
		{name: "fail negative member", path: "/v1/volumes/vol0/raid/fail", body: `{"member": -1}`, wantCode: 400, wantBody: `raid fail: member -1 is negative`},
		{name: "fail bad member type", path: "/v1/volumes/vol0/raid/fail", body: `{"member": "1"}`, wantCode: 400, wantBody: `raid fail: request body: field "member" is a JSON string, want a int`},
		{name: "remove", path: "/v1/volumes/vol0/raid/remove", body: `{"member": 2}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDRemove("vol0", 2)`},
		{name: "remove spare", path: "/v1/volumes/vol0/raid/remove-spare", body: `{"path": "/dev/sdg"}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDRemoveSpare("vol0", "/dev/sdg")`},
		{name: "remove configured spare", path: "/v1/volumes/_/raid/remove-spare", body: `{"path": "/dev/sdf"}`, wantCode: 200, wantBody: `{"configured":true}`, wantCall: `RAIDRemoveSpare("", "/dev/sdf")`},
		{name: "remove spare without path", path: "/v1/volumes/vol0/raid/remove-spare", body: `{}`, wantCode: 400, wantBody: `raid remove-spare: path is required: the member file or block device`},
		{name: "remove spare relative path", path: "/v1/volumes/vol0/raid/remove-spare", body: `{"path": "sdg"}`, wantCode: 400, wantBody: `raid remove-spare: path "sdg" is relative: give an absolute path`},
		{name: "remove spare by member", path: "/v1/volumes/vol0/raid/remove-spare", body: `{"member": 1}`, wantCode: 400, wantBody: `raid remove-spare: request body: unknown field "member" (known: path)`},
		{name: "remove not a spare", path: "/v1/volumes/vol0/raid/remove-spare", body: `{"path": "/dev/sdb"}`,
			cmdErr: fmt.Errorf("raid: remove spare /dev/sdb from vol0: not a spare (spares: [\"/dev/sdf\"]): %w", ErrConflict), wantCode: 409,
			wantBody: `raid remove-spare: raid: remove spare /dev/sdb from vol0: not a spare (spares: ["/dev/sdf"]): not possible in the current state`,
			wantCall: `RAIDRemoveSpare("vol0", "/dev/sdb")`},
		{name: "add", path: "/v1/volumes/vol0/raid/add", body: `{"path": "/dev/sde"}`, wantCode: 200, wantBody: `{"member":2}`, wantCall: `RAIDAdd("vol0", "/dev/sde")`},
		{name: "add without path", path: "/v1/volumes/vol0/raid/add", body: `{}`, wantCode: 400, wantBody: `raid add: path is required: the member file or block device`},
		{name: "add relative path", path: "/v1/volumes/vol0/raid/add", body: `{"path": "sde"}`, wantCode: 400, wantBody: `raid add: path "sde" is relative: give an absolute path`},
		{name: "replace", path: "/v1/volumes/vol0/raid/replace", body: `{"member": 1, "path": "/dev/sdf"}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDReplace("vol0", 1, "/dev/sdf")`},
		{name: "replace without member", path: "/v1/volumes/vol0/raid/replace", body: `{"path": "/dev/sdf"}`, wantCode: 400, wantBody: `raid replace: member is required: the index of a member slot`},
		{name: "scrub", path: "/v1/volumes/vol0/raid/scrub", wantCode: 200, wantBody: `{}`, wantCall: `RAIDScrub("vol0", false)`},
		{name: "scrub repair", path: "/v1/volumes/vol0/raid/scrub", body: `{"repair": true}`, wantCode: 200, wantBody: `{}`, wantCall: `RAIDScrub("vol0", true)`},
		{name: "scrub unknown field", path: "/v1/volumes/vol0/raid/scrub", body: `{"fix": true}`, wantCode: 400, wantBody: `raid scrub: request body: unknown field "fix" (known: repair)`},
		{name: "not a raid volume", path: "/v1/volumes/vol0/raid/fail", body: `{"member": 1}`, cmdErr: conflict, wantCode: 409,
			wantBody: `raid fail: volume "vol0" is not on a RAID array: not possible in the current state`, wantCall: `RAIDFail("vol0", 1)`},
		{name: "unknown volume", path: "/v1/volumes/vol9/raid/scrub", cmdErr: notFound, wantCode: 404,
			wantBody: `raid scrub: volume "vol9": not found`, wantCall: `RAIDScrub("vol9", false)`},
	}
	b := &fakeRAIDBackend{}
	socket := serve(t, b)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.cmdErr = tt.cmdErr
			body, code := rawPost(t, socket, tt.path, tt.body)
			if code != tt.wantCode {
				t.Errorf("code %d, want %d (%s)", code, tt.wantCode, body)
			}
			if code == 200 {
				var got, want any
				if err := json.Unmarshal([]byte(body), &got); err != nil {
					t.Fatal(err)
				}
				_ = json.Unmarshal([]byte(tt.wantBody), &want)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("reply %s, want %s", body, tt.wantBody)
				}
			} else {
				var eb errorBody
				if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error != tt.wantBody {
					t.Errorf("error %q, want %q", eb.Error, tt.wantBody)
				}
			}
			calls := b.Calls()
			if tt.wantCall == "" && len(calls) != 0 || tt.wantCall != "" && (len(calls) != 1 || calls[0] != tt.wantCall) {
				t.Errorf("calls %q, want %q", calls, tt.wantCall)
			}
		})
	}
}

func TestRAIDRoutesWithoutRAID(t *testing.T) {
	socket := serve(t, &fakeBackend{})
	for _, verb := range []string{"scrub", "remove-spare"} {
		body, code := rawPost(t, socket, "/v1/volumes/vol0/raid/"+verb, `{}`)
		if code != 404 || body != "{\n  \"error\": \"this daemon has no RAID support\"\n}\n" {
			t.Errorf("%s: %d %q", verb, code, body)
		}
	}
}

func TestRAIDClient(t *testing.T) {
	b := &fakeRAIDBackend{}
	c := Dial(serve(t, b))
	defer c.Close()
	ctx := context.Background()
	tests := []struct {
		do       func() error
		wantCall string
	}{
		{func() error { return c.RAIDFail(ctx, "vol0", 0) }, `RAIDFail("vol0", 0)`},
		{func() error { return c.RAIDRemove(ctx, "", 1) }, `RAIDRemove("", 1)`},
		{func() error {
			configured, err := c.RAIDRemoveSpare(ctx, "vol0", "/dev/sdf")
			if err == nil && !configured {
				err = fmt.Errorf("configured false, want true")
			}
			return err
		}, `RAIDRemoveSpare("vol0", "/dev/sdf")`},
		{func() error {
			configured, err := c.RAIDRemoveSpare(ctx, "a b", "/dev/sdg")
			if err == nil && configured {
				err = fmt.Errorf("configured true, want false")
			}
			return err
		}, `RAIDRemoveSpare("a b", "/dev/sdg")`},
		{func() error {
			m, err := c.RAIDAdd(ctx, "a b", "/dev/sde")
			if err == nil && m != 2 {
				err = fmt.Errorf("member %d, want 2", m)
			}
			return err
		}, `RAIDAdd("a b", "/dev/sde")`},
		{func() error { return c.RAIDReplace(ctx, "vol0", 2, "/x/y.img") }, `RAIDReplace("vol0", 2, "/x/y.img")`},
		{func() error { return c.RAIDScrub(ctx, "vol0", true) }, `RAIDScrub("vol0", true)`},
	}
	for _, tt := range tests {
		if err := tt.do(); err != nil {
			t.Fatalf("%s: %v", tt.wantCall, err)
		}
		if got := b.Calls(); len(got) != 1 || got[0] != tt.wantCall {
			t.Errorf("calls %q, want %q", got, tt.wantCall)
		}
	}
	b.cmdErr = fmt.Errorf("raid: fail vol0 member 1: refused: %w", ErrConflict)
	if err := c.RAIDFail(ctx, "vol0", 1); !errors.Is(err, ErrConflict) {
		t.Errorf("RAIDFail: %v, want ErrConflict", err)
	}
}

func TestRAIDStatusRoundTrip(t *testing.T) {
	last := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	next := last.Add(720 * time.Hour)
	want := Status{Node: "n", Volumes: []VolumeStatus{{Name: "vol0", Clients: []nbd.ClientInfo{}, RAID: &RAIDStatus{
		Level: "raid5", UUID: "u", Health: "degraded", ChunkSize: 65536, MemberSize: 1 << 20, Events: 7,
		Members:   []RAIDMember{{Index: 0, Path: "/a", State: "in_sync"}, {Index: 1, State: "faulty", Error: "removed"}},
		Progress:  &RAIDProgress{Op: "rebuild", State: "running", Member: 1, DoneBytes: 10, TotalBytes: 100, BytesPerSecond: 5, ETASeconds: 18},
		Recovery:  RAIDRecovery{Dirty: true, DirtyRegions: 3, Resynced: []int{2}},
		LastScrub: &last, NextScrub: &next,
	}}}}
	c := Dial(serve(t, &fakeBackend{st: want}))
	defer c.Close()
	got, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Volumes[0].RAID, want.Volumes[0].RAID) {
		t.Errorf("got %+v\nwant %+v", got.Volumes[0].RAID, want.Volumes[0].RAID)
	}
}

// TestRAIDStatusScrubTimesJSON checks the names and format of the scrub
// times, and that they are left out when unknown.
func TestRAIDStatusScrubTimesJSON(t *testing.T) {
	last := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	next := last.Add(720 * time.Hour)
	b, err := json.Marshal(RAIDStatus{LastScrub: &last, NextScrub: &next})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, `"last_scrub":"2026-11-26T04:00:00Z"`) || !strings.Contains(s, `"next_scrub":"2026-12-26T04:00:00Z"`) {
		t.Errorf("json %s", s)
	}
	b, err = json.Marshal(RAIDStatus{})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "last_scrub") || strings.Contains(s, "next_scrub") {
		t.Errorf("json of unknown scrub times %s", s)
	}
}
