package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

func TestDecodeSASLInitialResponse(t *testing.T) {
	encode := func(name string, length int32, data string) []byte {
		body := append([]byte(name), 0)
		body = binary.BigEndian.AppendUint32(body, uint32(length))
		return append(body, data...)
	}
	name, data, werr := decodeSASLInitialResponse(encode(mechanismSCRAM, 8, "n,,n=,r="))
	if werr != nil || name != mechanismSCRAM || string(data) != "n,,n=,r=" {
		t.Errorf("valid message: %q %q %v", name, data, werr)
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"no terminator", []byte(mechanismSCRAM)},
		{"no length", append([]byte(mechanismSCRAM), 0, 0, 0)},
		{"length -1", encode(mechanismSCRAM, -1, "")},
		{"length too long", encode(mechanismSCRAM, 9, "n,,n=,r=")},
		{"length too short", encode(mechanismSCRAM, 7, "n,,n=,r=")},
	} {
		if _, _, werr := decodeSASLInitialResponse(tc.body); werr == nil || werr.code != codeProtocolViolation {
			t.Errorf("%s: error %v, want 08P01", tc.name, werr)
		}
	}
}

func TestCheckChannelBindingFlag(t *testing.T) {
	cases := []struct {
		name        string
		clientFirst string
		mechanism   string
		offeredPlus bool
		wantMessage string // empty when the flag is accepted
		wantDetail  string
	}{
		{name: "n without TLS", clientFirst: "n,,n=,r=abc", mechanism: mechanismSCRAM},
		{name: "y without PLUS offered", clientFirst: "y,,n=,r=abc", mechanism: mechanismSCRAM},
		{name: "n with PLUS offered", clientFirst: "n,,n=,r=abc", mechanism: mechanismSCRAM, offeredPlus: true},
		{name: "PLUS with p", clientFirst: "p=tls-server-end-point,,n=,r=abc", mechanism: mechanismSCRAMPlus, offeredPlus: true},
		{
			name: "y with PLUS offered", clientFirst: "y,,n=,r=abc", mechanism: mechanismSCRAM, offeredPlus: true,
			wantMessage: "SCRAM channel binding negotiation error", wantDetail: "thinks the server does not",
		},
		{
			name: "PLUS without p", clientFirst: "n,,n=,r=abc", mechanism: mechanismSCRAMPlus, offeredPlus: true,
			wantMessage: "malformed SCRAM message", wantDetail: "does not include channel binding data",
		},
		{
			name: "plain with p", clientFirst: "p=tls-server-end-point,,n=,r=abc", mechanism: mechanismSCRAM, offeredPlus: true,
			wantMessage: "malformed SCRAM message", wantDetail: "includes channel binding data",
		},
		{
			name: "tls-unique", clientFirst: "p=tls-unique,,n=,r=abc", mechanism: mechanismSCRAMPlus, offeredPlus: true,
			wantMessage: `unsupported SCRAM channel-binding type "tls-unique"`,
		},
		{name: "empty", clientFirst: "", mechanism: mechanismSCRAM, wantMessage: "malformed SCRAM message", wantDetail: "empty"},
		{name: "unknown flag", clientFirst: "x,,n=,r=abc", mechanism: mechanismSCRAM, wantMessage: "malformed SCRAM message", wantDetail: "flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			werr := checkChannelBindingFlag([]byte(tc.clientFirst), tc.mechanism, tc.offeredPlus)
			if tc.wantMessage == "" {
				if werr != nil {
					t.Fatalf("rejected: %v", werr)
				}
				return
			}
			if werr == nil {
				t.Fatalf("accepted, want %q", tc.wantMessage)
			}
			if werr.code != codeProtocolViolation || werr.message != tc.wantMessage {
				t.Errorf("got %s %q, want 08P01 %q", werr.code, werr.message, tc.wantMessage)
			}
			if !strings.Contains(werr.detail, tc.wantDetail) {
				t.Errorf("detail %q does not contain %q", werr.detail, tc.wantDetail)
			}
		})
	}
}

// TestServerEndPointBindingMatchesClient checks the proxy's channel
// binding against the one a client computes from the certificate it
// receives in a real handshake.
func TestServerEndPointBindingMatchesClient(t *testing.T) {
	config, _, err := EnsureCertificates(t.TempDir(), DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	serverSide, err := serverEndPointBinding(config.Certificates[0])
	if err != nil {
		t.Fatal(err)
	}

	clientConn, serverConn := net.Pipe()
	defer clientConn.Close()
	defer serverConn.Close()
	go func() {
		_ = tls.Server(serverConn, config).Handshake()
	}()
	client := tls.Client(clientConn, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	state := client.ConnectionState()
	clientSide, err := scram.NewTLSServerEndpointBinding(&state)
	if err != nil {
		t.Fatal(err)
	}
	if !serverSide.Matches(clientSide) {
		t.Errorf("server binding %x differs from the client's %x", serverSide.Data, clientSide.Data)
	}
}

func TestEnsureCertificatesSAN(t *testing.T) {
	dir := t.TempDir()
	config, files, err := EnsureCertificates(dir, DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	if files.Renewed {
		t.Error("a new certificate is reported as renewed")
	}
	leaf := config.Certificates[0].Leaf
	for _, name := range []string{"localhost", "*.pg.sdb.localhost"} {
		if err := leaf.VerifyHostname(strings.Replace(name, "*", "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64", 1)); err != nil {
			t.Errorf("certificate does not cover %s: %v", name, err)
		}
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate does not cover 127.0.0.1: %v", err)
	}
	if got := config.NextProtos; len(got) != 1 || got[0] != "postgresql" {
		t.Errorf("NextProtos = %q, want [postgresql]", got)
	}
	caBefore, err := os.ReadFile(files.CACert)
	if err != nil {
		t.Fatal(err)
	}

	// Loading again keeps the certificate.
	again, files, err := EnsureCertificates(dir, DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	if files.Renewed || !bytes.Equal(again.Certificates[0].Leaf.Raw, leaf.Raw) {
		t.Error("a current certificate was replaced")
	}

	// Another suffix replaces the server certificate, signed by the same CA.
	renewed, files, err := EnsureCertificates(dir, "db.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !files.Renewed {
		t.Error("a certificate for another suffix is not reported as renewed")
	}
	if err := renewed.Certificates[0].Leaf.VerifyHostname("3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64.db.example.test"); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
	caAfter, err := os.ReadFile(files.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(caBefore, caAfter) {
		t.Error("renewing the server certificate replaced the CA")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caAfter)
	if _, err := renewed.Certificates[0].Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Errorf("renewed certificate does not chain to the CA: %v", err)
	}
}

// TestEnsureCertificatesRenewsOldCertificate writes a server certificate
// like the ones made before database host names existed, valid for
// localhost only, and checks that it is replaced.
func TestEnsureCertificatesRenewsOldCertificate(t *testing.T) {
	dir := t.TempDir()
	_, files, err := EnsureCertificates(dir, DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey, err := loadCA(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeServerCertificate(files, caCert, caKey, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	config, files, err := EnsureCertificates(dir, DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	if !files.Renewed {
		t.Error("certificate without *.pg.sdb.localhost was kept")
	}
	if err := config.Certificates[0].Leaf.VerifyHostname("3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64.pg.sdb.localhost"); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
}

func TestLoadCertificate(t *testing.T) {
	dir := t.TempDir()
	_, files, err := EnsureCertificates(dir, DefaultSNISuffix)
	if err != nil {
		t.Fatal(err)
	}
	config, loaded, err := LoadCertificate(files.ServerCert, files.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.CACert != "" || loaded.ServerCert != files.ServerCert {
		t.Errorf("files %+v", loaded)
	}
	if len(config.NextProtos) != 1 || config.NextProtos[0] != "postgresql" {
		t.Errorf("NextProtos = %q", config.NextProtos)
	}
	if _, _, err := LoadCertificate(files.ServerCert, filepath.Join(dir, "missing.key")); err == nil {
		t.Error("a missing key file loaded")
	}
}
