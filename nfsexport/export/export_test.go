package export

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/blockrep/blockrep/nfsexport/rpc"
)

func sys(uid, gid uint32, groups ...uint32) rpc.Cred {
	return rpc.Cred{Flavor: rpc.AuthSys, Sys: rpc.SysCred{UID: uid, GID: gid, GIDs: groups}}
}

func TestIdentity(t *testing.T) {
	anon := Identity{UID: 65534, GID: 65534}
	for _, tc := range []struct {
		name    string
		opts    Options
		cred    rpc.Cred
		want    Identity
		tooWeak bool
	}{
		{"rule 4: root squashed", Options{AnonUID: 65534, AnonGID: 65534}, sys(0, 0, 0, 5), Identity{65534, 65534, []uint32{65534, 5}}, false},
		{"rule 4: gid 0 of a user squashed", Options{AnonUID: 65534, AnonGID: 65534}, sys(33, 0), Identity{33, 65534, []uint32{}}, false},
		{"rule 4: a user passes", Options{AnonUID: 65534, AnonGID: 65534}, sys(33, 33, 4, 27), Identity{33, 33, []uint32{4, 27}}, false},
		{"rule 5: no_root_squash", Options{Squash: NoRootSquash}, sys(0, 0, 0), Identity{0, 0, []uint32{0}}, false},
		{"rule 3: all_squash", Options{Squash: AllSquash, AnonUID: 1000, AnonGID: 1001}, sys(33, 33, 4), Identity{UID: 1000, GID: 1001}, false},
		{"rule 2: AUTH_NONE refused", Options{}, rpc.Cred{Flavor: rpc.AuthNone}, Identity{}, true},
		{"rule 2: AUTH_NONE allowed as anon", Options{AllowAuthNone: true, AnonUID: 65534, AnonGID: 65534}, rpc.Cred{Flavor: rpc.AuthNone}, anon, false},
		{"unknown flavor refused", Options{AllowAuthNone: true}, rpc.Cred{Flavor: 6}, Identity{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.opts.Identity(tc.cred)
			if tc.tooWeak {
				if !errors.Is(err, ErrAuthTooWeak) {
					t.Fatalf("err = %v, want ErrAuthTooWeak", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("identity = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIdentityDoesNotAliasCredGroups(t *testing.T) {
	cred := sys(33, 33, 4)
	for _, sq := range []Squash{RootSquash, NoRootSquash} {
		o := Options{Squash: sq}
		id, _ := o.Identity(cred)
		id.Groups[0] = 99
		if cred.Sys.GIDs[0] != 4 {
			t.Fatalf("%v: Identity's groups alias the credential's", sq)
		}
	}
}

func TestAdmit(t *testing.T) {
	o := Options{Path: "/web", Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:2::/48")}}
	for addr, ok := range map[string]bool{
		"198.18.0.7": true, "198.18.1.7": false, "::ffff:198.18.0.9": true, "2001:2::5": true, "2001:3::5": false, "127.0.0.1": false,
	} {
		err := o.Admit(netip.MustParseAddr(addr))
		if ok != (err == nil) {
			t.Errorf("Admit(%s) = %v, want admitted=%v", addr, err, ok)
		}
		if err != nil && !errors.Is(err, ErrClientRefused) {
			t.Errorf("Admit(%s) error %v does not wrap ErrClientRefused", addr, err)
		}
	}
}

func TestValidate(t *testing.T) {
	good := Options{Path: "/web", Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]Options{
		"path":     {Path: "web", Networks: good.Networks},
		"networks": {Path: "/web"},
		"squash":   {Path: "/web", Networks: good.Networks, Squash: 7},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, o)
		}
	}
	for _, s := range []string{"root_squash", "no_root_squash", "all_squash"} {
		if sq, err := ParseSquash(s); err != nil || sq.String() != s {
			t.Errorf("ParseSquash(%q) = %v, %v", s, sq, err)
		}
	}
	if _, err := ParseSquash("squash_all"); err == nil {
		t.Error("ParseSquash accepted squash_all")
	}
}
