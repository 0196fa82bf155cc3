package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Certificate files in the data directory's tls/ folder, made at first start.
const (
	CAFileName         = "ca.crt"
	caKeyFileName      = "ca.key"
	serverCertFileName = "server.crt"
	serverKeyFileName  = "server.key"
)

// DefaultSNISuffix is the domain under which every database has a host
// name, <database-id>.pg.sdb.localhost, as <database-id>.pg.sdb.fr-par.scw.cloud
// in the real service. RFC 6761 reserves .localhost for loopback and
// systemd-resolved resolves such names, but glibc without it does not.
// libpq clients can pass hostaddr=127.0.0.1 beside the host name.
const DefaultSNISuffix = "pg.sdb.localhost"

// alpnProtocol is the ALPN protocol name PostgreSQL 17 registers and
// requires on direct TLS connections.
const alpnProtocol = "postgresql"

// certificateLifetime is how long generated certificates stay valid.
const certificateLifetime = 10 * 365 * 24 * time.Hour

// renewBefore is how long before its expiry a generated server
// certificate is replaced at start.
const renewBefore = 30 * 24 * time.Hour

// serverIPs are the addresses the generated server certificate is valid
// for, so sslmode=verify-full works on loopback.
var serverIPs = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}

// serverDNSNames are the names the generated server certificate is valid
// for: localhost and every database host name under suffix.
func serverDNSNames(suffix string) []string {
	return []string{"localhost", "*." + suffix}
}

// TLSFiles are the paths of the proxy's certificate material. CACert is
// empty for a certificate the user supplied.
type TLSFiles struct {
	CACert     string
	ServerCert string
	ServerKey  string
	// Renewed is set when EnsureCertificates replaced an existing server
	// certificate that lacked a host name or was about to expire.
	Renewed bool
}

// ValidSNISuffix checks that suffix is a DNS name that database host names
// can end in: dot-separated labels of letters, digits and hyphens, in
// lower case.
func ValidSNISuffix(suffix string) error {
	if suffix == "" || len(suffix) > 200 {
		return fmt.Errorf("invalid SNI suffix %q: expected a DNS name such as %s", suffix, DefaultSNISuffix)
	}
	for _, label := range strings.Split(suffix, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid SNI suffix %q: label %q is empty, longer than 63 characters, or starts or ends with a hyphen", suffix, label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid SNI suffix %q: only lower-case letters, digits, hyphens and dots are allowed", suffix)
			}
		}
	}
	return nil
}

// EnsureCertificates loads the CA and server certificate from dir, creating
// them (and dir, mode 0700) the first time. Private keys are written 0600.
// A server certificate that does not cover *.sniSuffix, or that expires
// within 30 days, is replaced by a new one from the same CA. Older
// sdblocal versions made certificates without *.sniSuffix. Keeping the CA
// keeps clients that trust ca.crt working.
func EnsureCertificates(dir, sniSuffix string) (*tls.Config, TLSFiles, error) {
	files := TLSFiles{
		CACert:     filepath.Join(dir, CAFileName),
		ServerCert: filepath.Join(dir, serverCertFileName),
		ServerKey:  filepath.Join(dir, serverKeyFileName),
	}
	if err := ValidSNISuffix(sniSuffix); err != nil {
		return nil, files, err
	}
	if _, err := os.Stat(files.ServerCert); errors.Is(err, os.ErrNotExist) {
		if err := generateCertificates(dir, files, sniSuffix); err != nil {
			return nil, files, err
		}
	}
	// A key that does not match the certificate is what a stop between the
	// two writes of a renewal leaves behind; a renewal repairs it.
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil || !certificateCurrent(cert.Leaf, sniSuffix, time.Now()) {
		if err := renewServerCertificate(dir, files, sniSuffix); err != nil {
			return nil, files, err
		}
		files.Renewed = true
		cert, err = tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
		if err != nil {
			return nil, files, fmt.Errorf("load TLS certificate %s: %w", files.ServerCert, err)
		}
	}
	return newTLSConfig(cert), files, nil
}

// LoadCertificate loads a certificate chain and private key the user
// supplied, both PEM. The first certificate in certFile is the one served.
func LoadCertificate(certFile, keyFile string) (*tls.Config, TLSFiles, error) {
	files := TLSFiles{ServerCert: certFile, ServerKey: keyFile}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, files, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return newTLSConfig(cert), files, nil
}

// newTLSConfig serves cert. NextProtos makes a client that offers ALPN
// without "postgresql" fail the handshake, as PostgreSQL 17 does, and lets
// direct TLS clients negotiate it.
func newTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{alpnProtocol},
	}
}

// certificateCurrent reports whether leaf covers localhost and
// *.sniSuffix and stays valid for at least renewBefore after now.
func certificateCurrent(leaf *x509.Certificate, sniSuffix string, now time.Time) bool {
	if leaf == nil || now.Add(renewBefore).After(leaf.NotAfter) {
		return false
	}
	for _, name := range serverDNSNames(sniSuffix) {
		if !slices.Contains(leaf.DNSNames, name) {
			return false
		}
	}
	return true
}

func generateCertificates(dir string, files TLSFiles, sniSuffix string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create TLS directory: %w", err)
	}
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "sdblocal local CA", Organization: []string{"sdblocal"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certificateLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, caKeyFileName), "EC PRIVATE KEY", mustMarshalEC(caKey), 0o600); err != nil {
		return err
	}
	if err := writePEM(files.CACert, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	return writeServerCertificate(files, caCert, caKey, serverDNSNames(sniSuffix))
}

// renewServerCertificate replaces the server certificate with one signed
// by the existing CA, or makes a new CA as well when the CA's files are
// missing or unreadable.
func renewServerCertificate(dir string, files TLSFiles, sniSuffix string) error {
	caCert, caKey, err := loadCA(dir, files)
	if err != nil || time.Now().Add(renewBefore).After(caCert.NotAfter) {
		return generateCertificates(dir, files, sniSuffix)
	}
	return writeServerCertificate(files, caCert, caKey, serverDNSNames(sniSuffix))
}

func loadCA(dir string, files TLSFiles) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certDER, err := readPEM(files.CACert, "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	caCert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", files.CACert, err)
	}
	keyPath := filepath.Join(dir, caKeyFileName)
	keyDER, err := readPEM(keyPath, "EC PRIVATE KEY")
	if err != nil {
		return nil, nil, err
	}
	caKey, err := x509.ParseECPrivateKey(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", keyPath, err)
	}
	if !caKey.PublicKey.Equal(caCert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not belong to %s", keyPath, files.CACert)
	}
	return caCert, caKey, nil
}

func readPEM(path, blockType string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != blockType {
		return nil, fmt.Errorf("%s: no PEM block of type %s", path, blockType)
	}
	return block.Bytes, nil
}

// writeServerCertificate makes a server key and a certificate for it,
// valid for dnsNames and serverIPs, signed by the CA.
func writeServerCertificate(files TLSFiles, caCert *x509.Certificate, caKey *ecdsa.PrivateKey, dnsNames []string) error {
	now := time.Now()
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	notAfter := now.Add(certificateLifetime)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"sdblocal"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  serverIPs,
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, caCert, &serverKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}
	if err := writePEM(files.ServerKey, "EC PRIVATE KEY", mustMarshalEC(serverKey), 0o600); err != nil {
		return err
	}
	// The certificate is written last: its presence marks a complete set.
	return writePEM(files.ServerCert, "CERTIFICATE", serverDER, 0o644)
}

func randomSerial() *big.Int {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return serial
}

func mustMarshalEC(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return der
}

func writePEM(path, blockType string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
