package mountinfo

import "testing"

func TestByID(t *testing.T) {
	const info = `22 1 0:21 / / rw,relatime - overlay overlay rw
36 35 98:0 /mnt1 /mnt\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue
41 22 7:3 / /tmp/x rw,relatime shared:7 - xfs /dev/loop3 rw,attr2
`
	m, err := ByID(info, 41)
	if err != nil {
		t.Fatal(err)
	}
	if (m != Mount{ID: 41, Major: 7, Minor: 3, Root: "/", MountPoint: "/tmp/x", FSType: "xfs", Source: "/dev/loop3"}) {
		t.Fatalf("ByID(41) = %+v", m)
	}
	m, err = ByID(info, 36)
	if err != nil || m.MountPoint != "/mnt two" || m.Root != "/mnt1" || m.FSType != "ext3" {
		t.Fatalf("ByID(36) = %+v, %v", m, err)
	}
	if _, err := ByID(info, 99); err == nil {
		t.Fatal("ByID(99): no error")
	}
	if _, err := ByID("1 2 x / / rw - ext4 /dev/a rw\n", 1); err == nil {
		t.Fatal("malformed device: no error")
	}
	if _, err := ByID("1 2 0:1 / / rw\n", 1); err == nil {
		t.Fatal("no separator: no error")
	}
}

func TestAt(t *testing.T) {
	ms, err := Parse(`22 1 0:21 / / rw,relatime - overlay overlay rw
41 22 7:3 / /srv/web rw - ext4 /dev/loop3 rw
42 41 7:4 / /srv/web rw - xfs /dev/loop4 rw
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := At(ms, "/srv/web"); len(got) != 2 || got[1].Source != "/dev/loop4" {
		t.Fatalf("At /srv/web = %+v, want both, the xfs on top", got)
	}
	if got := At(ms, "/srv"); len(got) != 0 {
		t.Fatalf("At /srv = %+v", got)
	}
}
