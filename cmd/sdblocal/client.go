package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/scaleway/scaleway-sdk-go/scw"
	"github.com/spf13/cobra"

	"github.com/sdblocal/sdblocal/auth"
)

// clientOptions are the flags shared by the commands that call the API
// through the Scaleway SDK: db, backup and iam.
type clientOptions struct {
	dataDir string
	apiURL  string
	region  string
	output  string
}

func addClientFlags(cmd *cobra.Command, opts *clientOptions) {
	f := cmd.PersistentFlags()
	f.StringVar(&opts.dataDir, "data-dir", defaultDataDir(), "data directory of the server, for its owner credentials and address when SCW_ACCESS_KEY and SCW_SECRET_KEY are unset")
	f.StringVar(&opts.apiURL, "api-url", "", "API base URL (default $SCW_API_URL, else the running server's address)")
	f.StringVar(&opts.region, "region", "", "region (default $SCW_DEFAULT_REGION, else fr-par)")
	f.StringVarP(&opts.output, "output", "o", "table", "output format: table or json")
}

// apiClient is an SDK client with the identity it acts as.
type apiClient struct {
	client *scw.Client
	// principalID is known when the owner credentials come from the data
	// directory; otherwise commands that need it look the key up.
	principalID string
	accessKey   string
	secretKey   string
	projectID   string
}

// newAPIClient builds an SDK client from the SCW_ environment when it holds
// a key pair, and from the server's credentials file otherwise.
func (o *clientOptions) newAPIClient() (*apiClient, error) {
	if o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("invalid --output %q: expected table or json", o.output)
	}
	var c apiClient
	var options []scw.ClientOption
	if os.Getenv("SCW_ACCESS_KEY") != "" || os.Getenv("SCW_SECRET_KEY") != "" {
		options = append(options, scw.WithEnv())
		c.accessKey = os.Getenv("SCW_ACCESS_KEY")
		c.secretKey = os.Getenv("SCW_SECRET_KEY")
		c.projectID = os.Getenv("SCW_DEFAULT_PROJECT_ID")
	} else {
		creds, err := auth.ReadCredentials(o.dataDir)
		if err != nil {
			return nil, fmt.Errorf("no credentials: set SCW_ACCESS_KEY and SCW_SECRET_KEY, or run `eval \"$(sdblocal env)\"`: %w", err)
		}
		options = append(options,
			scw.WithAuth(creds.AccessKey, creds.SecretKey),
			scw.WithDefaultOrganizationID(creds.OrganizationID),
			scw.WithDefaultProjectID(creds.ProjectID))
		c.principalID = creds.PrincipalID
		c.accessKey, c.secretKey, c.projectID = creds.AccessKey, creds.SecretKey, creds.ProjectID
	}

	apiURL := o.apiURL
	if apiURL == "" {
		apiURL = os.Getenv("SCW_API_URL")
	}
	if apiURL == "" {
		apiURL = "http://" + defaultAPIAddr
		if addrs, ok := readAddresses(o.dataDir); ok {
			apiURL = "http://" + addrs.API
		}
	}
	options = append(options, scw.WithAPIURL(strings.TrimSuffix(apiURL, "/")))

	region := o.region
	if region == "" {
		region = os.Getenv("SCW_DEFAULT_REGION")
	}
	if region == "" {
		region = string(scw.RegionFrPar)
	}
	parsed, err := scw.ParseRegion(region)
	if err != nil {
		return nil, fmt.Errorf("invalid --region %q: %w", region, err)
	}
	options = append(options, scw.WithDefaultRegion(parsed))

	client, err := scw.NewClient(options...)
	if err != nil {
		return nil, fmt.Errorf("create API client: %w", err)
	}
	c.client = client
	return &c, nil
}

// printer writes command results as a table or as JSON.
type printer struct {
	out    io.Writer
	format string
}

func (o *clientOptions) printer(cmd *cobra.Command) printer {
	return printer{out: cmd.OutOrStdout(), format: o.output}
}

// print writes value as indented JSON, or as a table of the given columns,
// one row per record; cells turns one record into its row.
func print[T any](p printer, value any, records []T, columns []string, cells func(T) []string) error {
	if p.format == "json" {
		enc := json.NewEncoder(p.out)
		enc.SetIndent("", "  ")
		return enc.Encode(value)
	}
	w := tabwriter.NewWriter(p.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(columns, "\t"))
	for _, record := range records {
		fmt.Fprintln(w, strings.Join(cells(record), "\t"))
	}
	return w.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
