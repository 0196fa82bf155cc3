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
	"time"
)

// Certificate files in the data directory's tls/ folder, made at first start.
const (
	CAFileName         = "ca.crt"
	caKeyFileName      = "ca.key"
	serverCertFileName = "server.crt"
	serverKeyFileName  = "server.key"
)

// certificateLifetime is how long generated certificates stay valid.
const certificateLifetime = 10 * 365 * 24 * time.Hour

// serverNames are the DNS names and addresses the generated server
// certificate is valid for, so sslmode=verify-full works on loopback.
var (
	serverDNSNames = []string{"localhost"}
	serverIPs      = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
)

// TLSFiles are the paths of the proxy's certificate material.
type TLSFiles struct {
	CACert     string
	ServerCert string
	ServerKey  string
}

// EnsureCertificates loads the CA and server certificate from dir, creating
// them (and dir, mode 0700) the first time. Private keys are written 0600.
func EnsureCertificates(dir string) (*tls.Config, TLSFiles, error) {
	files := TLSFiles{
		CACert:     filepath.Join(dir, CAFileName),
		ServerCert: filepath.Join(dir, serverCertFileName),
		ServerKey:  filepath.Join(dir, serverKeyFileName),
	}
	if _, err := os.Stat(files.ServerCert); errors.Is(err, os.ErrNotExist) {
		if err := generateCertificates(dir, files); err != nil {
			return nil, files, err
		}
	}
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		return nil, files, fmt.Errorf("load TLS certificate %s: %w", files.ServerCert, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, files, nil
}

func generateCertificates(dir string, files TLSFiles) error {
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

	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate server key: %w", err)
	}
	serverTemplate := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"sdblocal"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certificateLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     serverDNSNames,
		IPAddresses:  serverIPs,
	}
	serverDER, err := x509.CreateCertificate(rand.Reader, serverTemplate, caCert, &serverKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create server certificate: %w", err)
	}

	if err := writePEM(filepath.Join(dir, caKeyFileName), "EC PRIVATE KEY", mustMarshalEC(caKey), 0o600); err != nil {
		return err
	}
	if err := writePEM(files.CACert, "CERTIFICATE", caDER, 0o644); err != nil {
		return err
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
