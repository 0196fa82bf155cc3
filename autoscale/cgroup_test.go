package autoscale

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hybridMountinfo is the cgroup part of /proc/self/mountinfo on a v1
// hybrid host where cpu and cpuacct are separate hierarchies and the
// cgroup2 mount has no cpu controller.
const hybridMountinfo = `25 1 0:23 / / rw,relatime - overlay overlay rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// comountedMountinfo is a systemd v1 host with cpu and cpuacct on one
// hierarchy.
const comountedMountinfo = `25 1 0:23 / / rw - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/pids rw,nosuid shared:11 - cgroup cgroup rw,pids
`

// unifiedMountinfo is a pure cgroup v2 host.
const unifiedMountinfo = `25 1 0:23 / / rw - ext4 /dev/sda1 rw
29 25 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

func controllersFile(files map[string]string) func(string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		if content, ok := files[path]; ok {
			return []byte(content), nil
		}
		return nil, fs.ErrNotExist
	}
}

func TestDetectCPUCgroups(t *testing.T) {
	cases := []struct {
		name      string
		mountinfo string
		files     map[string]string
		want      *CPUCgroups
		wantErr   string
	}{
		{
			name:      "v1 hybrid with separate cpuacct",
			mountinfo: hybridMountinfo,
			files:     map[string]string{"/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"},
			want:      &CPUCgroups{version: cgroupV1, cpuDir: "/sys/fs/cgroup/cpu/sdblocal", acctDir: "/sys/fs/cgroup/cpuacct/sdblocal"},
		},
		{
			name:      "v1 with cpu and cpuacct together",
			mountinfo: comountedMountinfo,
			want:      &CPUCgroups{version: cgroupV1, cpuDir: "/sys/fs/cgroup/cpu,cpuacct/sdblocal", acctDir: "/sys/fs/cgroup/cpu,cpuacct/sdblocal"},
		},
		{
			name:      "v1 without cpuacct",
			mountinfo: "32 31 0:29 / /cg/cpu rw - cgroup cgroup rw,cpu\n",
			want:      &CPUCgroups{version: cgroupV1, cpuDir: "/cg/cpu/sdblocal"},
		},
		{
			name:      "v2 with the cpu controller",
			mountinfo: unifiedMountinfo,
			files:     map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"},
			want:      &CPUCgroups{version: cgroupV2, cpuDir: "/sys/fs/cgroup/sdblocal"},
		},
		{
			name:      "v2 without the cpu controller",
			mountinfo: unifiedMountinfo,
			files:     map[string]string{"/sys/fs/cgroup/cgroup.controllers": "memory pids\n"},
			wantErr:   "no cgroup hierarchy with the cpu controller",
		},
		{
			name:      "cpuacct alone is not cpu",
			mountinfo: "33 31 0:30 / /cg/cpuacct rw - cgroup cgroup rw,cpuacct\n",
			wantErr:   "no cgroup hierarchy with the cpu controller",
		},
		{
			name:      "no cgroups",
			mountinfo: "25 1 0:23 / / rw - ext4 /dev/sda1 rw\n",
			wantErr:   "no cgroup hierarchy with the cpu controller",
		},
		{
			name:      "escaped mount point",
			mountinfo: `32 31 0:29 / /mnt/my\040cgroups/cpu rw - cgroup cgroup rw,cpu` + "\n",
			want:      &CPUCgroups{version: cgroupV1, cpuDir: "/mnt/my cgroups/cpu/sdblocal"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mounts, err := parseMountinfo(strings.NewReader(tc.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			got, err := detectCPUCgroups(mounts, controllersFile(tc.files))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *got != *tc.want {
				t.Errorf("detected %+v, want %+v", *got, *tc.want)
			}
		})
	}
}

func TestParseMountinfoMalformed(t *testing.T) {
	if _, err := parseMountinfo(strings.NewReader("32 31 0:29 / /cg rw cgroup cgroup rw,cpu\n")); err == nil {
		t.Error("a line without the - separator was accepted")
	}
}

// fakeCgroupTree builds a cgroup directory with the control files a kernel
// would create, since a plain directory has none.
func fakeCgroupTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestInstanceCgroupV1Files(t *testing.T) {
	root := t.TempDir()
	c := &CPUCgroups{version: cgroupV1, cpuDir: filepath.Join(root, "cpu", "sdblocal"), acctDir: filepath.Join(root, "cpuacct", "sdblocal")}
	g := c.instance("db1")
	cpuDir, acctDir := filepath.Join(c.cpuDir, "db1"), filepath.Join(c.acctDir, "db1")
	fakeCgroupTree(t, cpuDir, map[string]string{"cpu.cfs_period_us": "", "cpu.cfs_quota_us": "", "cgroup.procs": ""})
	fakeCgroupTree(t, acctDir, map[string]string{"cgroup.procs": "", "cpuacct.usage": "2500000000\n"})

	if err := g.create(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cpuDir, "cpu.cfs_period_us")); got != "100000" {
		t.Errorf("cpu.cfs_period_us = %q, want 100000", got)
	}
	if err := g.setLimit(2); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cpuDir, "cpu.cfs_quota_us")); got != "200000" {
		t.Errorf("cpu.cfs_quota_us for 2 vCPUs = %q, want 200000", got)
	}
	if err := g.setLimit(0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(cpuDir, "cpu.cfs_quota_us")); got != "-1" {
		t.Errorf("cpu.cfs_quota_us without a limit = %q, want -1", got)
	}
	if err := g.placeStarted(4242); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{cpuDir, acctDir} {
		if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
			t.Errorf("%s/cgroup.procs = %q, want 4242", dir, got)
		}
	}
	if !g.accounts() {
		t.Error("a v1 cgroup with cpuacct does not account")
	}
	usage, err := g.usage()
	if err != nil || usage != 2500*time.Millisecond {
		t.Errorf("usage = %v, %v; want 2.5s", usage, err)
	}
}

func TestInstanceCgroupV2Files(t *testing.T) {
	root := t.TempDir()
	c := &CPUCgroups{version: cgroupV2, cpuDir: filepath.Join(root, "sdblocal")}
	g := c.instance("db2")
	dir := filepath.Join(c.cpuDir, "db2")
	fakeCgroupTree(t, dir, map[string]string{"cpu.max": "", "cgroup.procs": "", "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"})

	if err := g.setLimit(3); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "cpu.max")); got != "300000 100000" {
		t.Errorf("cpu.max for 3 vCPUs = %q, want \"300000 100000\"", got)
	}
	if err := g.setLimit(0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "cpu.max")); got != "max 100000" {
		t.Errorf("cpu.max without a limit = %q, want \"max 100000\"", got)
	}
	// On v2 the postmaster starts inside the cgroup, so nothing is moved.
	if err := g.placeStarted(4242); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dir, "cgroup.procs")); got != "" {
		t.Errorf("cgroup.procs = %q after placeStarted on v2, want it untouched", got)
	}
	usage, err := g.usage()
	if err != nil || usage != 1500*time.Millisecond {
		t.Errorf("usage = %v, %v; want 1.5s", usage, err)
	}
}

func TestInstanceCgroupMissing(t *testing.T) {
	c := &CPUCgroups{version: cgroupV1, cpuDir: filepath.Join(t.TempDir(), "cpu"), acctDir: filepath.Join(t.TempDir(), "acct")}
	g := c.instance("gone")
	if _, err := g.usage(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("usage of a missing cgroup: %v, want fs.ErrNotExist", err)
	}
	if err := g.remove(); err != nil {
		t.Errorf("remove of a missing cgroup: %v", err)
	}
}

func TestNilInstanceCgroup(t *testing.T) {
	var c *CPUCgroups
	g := c.instance("db")
	if g != nil {
		t.Fatal("a nil CPUCgroups returned a cgroup")
	}
	done, err := g.prepareSpawn(nil)
	if err != nil {
		t.Fatal(err)
	}
	done()
	if err := g.placeStarted(1); err != nil {
		t.Error(err)
	}
	if err := g.adoptProcessGroup(1); err != nil {
		t.Error(err)
	}
	if err := g.remove(); err != nil {
		t.Error(err)
	}
	if g.accounts() {
		t.Error("a nil cgroup accounts")
	}
}

func TestSubtreeDirs(t *testing.T) {
	shared := &CPUCgroups{version: cgroupV1, cpuDir: "/a/sdblocal", acctDir: "/a/sdblocal"}
	if got := shared.dirs(); !slices.Equal(got, []string{"/a/sdblocal"}) {
		t.Errorf("co-mounted dirs = %v, want one", got)
	}
	split := &CPUCgroups{version: cgroupV1, cpuDir: "/a/sdblocal", acctDir: "/b/sdblocal"}
	if got := split.instance("x").dirs(); !slices.Equal(got, []string{"/a/sdblocal/x", "/b/sdblocal/x"}) {
		t.Errorf("split instance dirs = %v", got)
	}
}
