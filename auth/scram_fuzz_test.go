package auth

import (
	"errors"
	"strings"
	"testing"

	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/catalog"
)

// FuzzSCRAMExchange sends client-first and client-final messages that no
// honest client would send, for a principal with a key and for an unknown
// one. The exchange must reject them with one of its documented errors and
// never log the client in. In clientFinal, "{r}" stands for the nonce the
// server sent, so that the fuzzer also reaches the checks past the nonce.
func FuzzSCRAMExchange(f *testing.F) {
	cat, err := catalog.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cat.Close() })
	creds, err := Bootstrap(cat, f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	authn := NewAuthenticator(cat)
	mockSecret := []byte("0123456789abcdef")

	for _, seed := range []struct{ first, final string }{
		{"n,,n=,r=rOprNGfwEbeRWgbNEkqO", "c=biws,r={r},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="},
		{"n,,n=,r=abc", "c=biws,r={r}"},
		{"y,,n=,r=abc", "c=eSws,r={r},p=AAAA"},
		{"p=tls-server-end-point,,n=,r=abc", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r={r},p=AAAA"},
		{"n,a=someone,n=user,r=abc", "c=biwsYT1zb21lb25lLA==,r={r},p=AAAA"},
		{"n,,m=ext,n=,r=abc", "c=biws,r={r},x=1,p=AAAA"},
		{"n,,n=,r=", "c=biws,r=,p="},
		{"n,,n=,r=abc", "c=@@@@,r={r},p=%%%%"},
		{"n,,n=,r=abc", "c=biws,r={r}x,p=AAAA"},
		{"", ""},
		{"n", "c"},
		{"n,,n=,r=a,b", ",,,,"},
		{"n,,n=\xff\xfe,r=\x00", "c=biws,r={r},p=\xff"},
	} {
		f.Add(seed.first, seed.final, false)
		f.Add(seed.first, seed.final, true)
	}
	f.Fuzz(func(t *testing.T, clientFirst, clientFinal string, unknown bool) {
		user := creds.PrincipalID
		if unknown {
			user = "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64"
		}
		exchange, err := authn.NewSCRAMExchange(user, scram.ChannelBinding{}, mockSecret)
		if err != nil {
			t.Fatal(err)
		}
		serverFirst, err := exchange.ServerFirst(clientFirst)
		if err != nil {
			if !errors.Is(err, ErrSCRAMMalformed) {
				t.Errorf("ServerFirst error %v, want ErrSCRAMMalformed", err)
			}
			return
		}
		nonce := scramAttribute(serverFirst, "r")
		if nonce == "" {
			t.Fatalf("server-first message %q has no nonce", serverFirst)
		}
		serverFinal, identity, err := exchange.ServerFinal(strings.ReplaceAll(clientFinal, "{r}", nonce))
		if err == nil {
			t.Fatalf("forged client-final message accepted: server-final %q, principal %q", serverFinal, identity.Principal.ID)
		}
		if !errors.Is(err, ErrInvalidCredentials) && !errors.Is(err, ErrSCRAMChannelBinding) && !errors.Is(err, ErrSCRAMMalformed) {
			t.Errorf("ServerFinal error %v, want one of its documented errors", err)
		}
		if serverFinal != "" || identity.Principal.ID != "" {
			t.Errorf("failed exchange returned server-final %q and principal %q", serverFinal, identity.Principal.ID)
		}
	})
}
