package autoscale

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// ServiceUser is the unprivileged account sdblocal runs as after starting as
// root. PostgreSQL refuses to run as root, and initdb needs the account to
// have a passwd entry.
type ServiceUser struct {
	Name string
	UID  int
	GID  int
}

// LookupServiceUser finds the account by name.
func LookupServiceUser(name string) (ServiceUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return ServiceUser{}, fmt.Errorf("user %q does not exist: create it (for example `useradd --system --user-group %s`) or pass another --user", name, name)
		}
		return ServiceUser{}, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return ServiceUser{}, fmt.Errorf("user %q has a non-numeric uid %q", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return ServiceUser{}, fmt.Errorf("user %q has a non-numeric gid %q", name, u.Gid)
	}
	if uid == 0 {
		return ServiceUser{}, fmt.Errorf("user %q has uid 0; PostgreSQL refuses to run as root: pass an unprivileged --user", name)
	}
	return ServiceUser{Name: name, UID: uid, GID: gid}, nil
}

// PrepareDir creates dir with mode 0700 and hands it and everything in it
// to the user, so the process can keep using it after DropPrivileges.
func PrepareDir(dir string, u ServiceUser) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) == u.UID && int(st.Gid) == u.GID {
			return nil
		}
		if err := os.Lchown(path, u.UID, u.GID); err != nil {
			return fmt.Errorf("chown %s to %s: %w", path, u.Name, err)
		}
		return nil
	})
}

// DropPrivileges switches the whole process to the user: supplementary
// groups cleared, then gid, then uid (in that order, since changing the uid
// first would forbid the other two). Go applies each call to every thread.
func DropPrivileges(u ServiceUser) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(u.GID); err != nil {
		return fmt.Errorf("set gid %d: %w", u.GID, err)
	}
	if err := syscall.Setuid(u.UID); err != nil {
		return fmt.Errorf("set uid %d: %w", u.UID, err)
	}
	if os.Geteuid() == 0 {
		return errors.New("still root after dropping privileges")
	}
	return nil
}
