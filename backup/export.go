package backup

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

// secretFileName is the file in the data directory that holds the key
// signing download tokens. Deleting it invalidates every download URL.
const secretFileName = "backup-export.key"

// secretBytes is the signing key's length, 256 bits, the output size of
// SHA-256.
const secretBytes = 32

// loadSecret reads the signing key, creating it on first use.
func loadSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, secretFileName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		secret := make([]byte, secretBytes)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("generate export signing key: %w", err)
		}
		// O_EXCL, so two processes racing on a fresh data directory cannot
		// each keep a different key; the catalog lock prevents that anyway.
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create export signing key: %w", err)
		}
		_, err = f.WriteString(hex.EncodeToString(secret) + "\n")
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("write export signing key %s: %w", path, err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read export signing key: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(secret) != secretBytes {
		return nil, fmt.Errorf("export signing key %s is not %d hex-encoded bytes: delete it to have a new one made (existing download URLs stop working)", path, secretBytes)
	}
	return secret, nil
}

// Export returns a download token for the backup, valid until expiresAt,
// ExportLifetime from now rounded down to the second. The token carries its
// expiry and an HMAC-SHA256 over the backup ID and that expiry, so it
// cannot be moved to another backup or extended.
func (s *Service) Export(b catalog.Backup) (token string, expiresAt time.Time, err error) {
	if b.Status != catalog.BackupStatusReady && b.Status != catalog.BackupStatusLocked {
		return "", time.Time{}, fmt.Errorf("backup %s is %s: only a ready backup can be exported", b.ID, b.Status)
	}
	expiresAt = s.cfg.Now().UTC().Add(s.cfg.ExportLifetime).Truncate(time.Second)
	return signToken(s.secret, b.ID, expiresAt), expiresAt, nil
}

// OpenExport checks a download token for the backup and opens its file.
// An invalid or expired token gives an error wrapping fs.ErrPermission,
// and a missing file one wrapping fs.ErrNotExist.
func (s *Service) OpenExport(b catalog.Backup, token string) (*os.File, error) {
	if err := verifyToken(s.secret, b.ID, token, s.cfg.Now()); err != nil {
		return nil, err
	}
	if b.Status != catalog.BackupStatusReady && b.Status != catalog.BackupStatusLocked {
		return nil, fmt.Errorf("backup %s is %s: %w", b.ID, b.Status, fs.ErrNotExist)
	}
	path, err := s.filePath(b)
	if err != nil {
		return nil, err
	}
	// O_NOFOLLOW: a symbolic link planted in the backup directory must
	// not lead anywhere else.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open backup file: %w", err)
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("backup file %s is not a regular file: %w", path, fs.ErrNotExist)
	}
	return f, nil
}

// tokenContext separates these MACs from any other use of the key.
const tokenContext = "sdblocal backup download v1"

// signToken returns "<expiry as Unix seconds>.<base64url MAC>".
func signToken(secret []byte, backupID string, expiresAt time.Time) string {
	expiry := strconv.FormatInt(expiresAt.Unix(), 10)
	return expiry + "." + base64.RawURLEncoding.EncodeToString(tokenMAC(secret, backupID, expiry))
}

func tokenMAC(secret []byte, backupID, expiry string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(tokenContext + "\n" + backupID + "\n" + expiry))
	return mac.Sum(nil)
}

// ErrTokenExpired is wrapped by the error of a correctly signed token
// whose expiry has passed.
var ErrTokenExpired = errors.New("download URL has expired")

// verifyToken checks the MAC in constant time before it looks at the
// expiry, so a changed expiry reads as an invalid token.
func verifyToken(secret []byte, backupID, token string, now time.Time) error {
	invalid := fmt.Errorf("download URL is invalid for backup %s: %w", backupID, fs.ErrPermission)
	expiry, encoded, ok := strings.Cut(token, ".")
	if !ok {
		return invalid
	}
	unix, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || strconv.FormatInt(unix, 10) != expiry {
		return invalid
	}
	// Strict rejects the spellings that differ only in the unused low bits
	// of the last character, so each MAC has exactly one valid token.
	got, err := base64.RawURLEncoding.Strict().DecodeString(encoded)
	if err != nil || !hmac.Equal(got, tokenMAC(secret, backupID, expiry)) {
		return invalid
	}
	expiresAt := time.Unix(unix, 0).UTC()
	if !now.Before(expiresAt) {
		return fmt.Errorf("%w at %s: export backup %s again for a new one: %w", ErrTokenExpired, expiresAt.Format(time.RFC3339), backupID, fs.ErrPermission)
	}
	return nil
}
