package backup

import (
	"errors"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyToken checks that a download token is accepted only in the
// exact form signToken makes for the backup, and that every other string
// is rejected as invalid or expired, never with another error.
func FuzzVerifyToken(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	const backupID = "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64"
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	valid := signToken(secret, backupID, now.Add(time.Hour))
	expiry, mac, _ := strings.Cut(valid, ".")

	// The last of the 43 base64 characters of the 32-byte MAC carries 2
	// unused bits; setting one gives another spelling of the same MAC.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", mac[len(mac)-1])
	respelled := mac[:len(mac)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last|1])

	for _, seed := range []string{
		valid,
		expiry + "." + respelled,
		expiry + "." + mac + "=",
		"+" + valid,
		" " + valid,
		expiry + ".." + mac,
		strings.ToUpper(valid),
		"9223372036854775807." + mac,
		"-1." + mac,
		".",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		err := verifyToken(secret, backupID, token, now)
		if err != nil {
			if !errors.Is(err, fs.ErrPermission) {
				t.Errorf("token %q: error %v does not wrap fs.ErrPermission", token, err)
			}
			return
		}
		prefix, _, _ := strings.Cut(token, ".")
		unix, parseErr := strconv.ParseInt(prefix, 10, 64)
		if parseErr != nil {
			t.Fatalf("token %q accepted with an expiry that does not parse: %v", token, parseErr)
		}
		if canonical := signToken(secret, backupID, time.Unix(unix, 0)); token != canonical {
			t.Errorf("token %q accepted, but the only token for its expiry is %q", token, canonical)
		}
	})
}
