package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	iam "github.com/scaleway/scaleway-sdk-go/api/iam/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
	"github.com/spf13/cobra"
)

func newIAMCommand() *cobra.Command {
	var opts clientOptions
	cmd := &cobra.Command{
		Use:   "iam",
		Short: "Manage IAM applications, API keys and policies through the API",
	}
	addClientFlags(cmd, &opts)
	cmd.AddCommand(newApplicationCommand(&opts), newAPIKeyCommand(&opts), newPolicyCommand(&opts))
	return cmd
}

var applicationColumns = []string{"ID", "NAME", "DESCRIPTION", "API_KEYS", "CREATED_AT"}

func applicationRow(a *iam.Application) []string {
	return []string{a.ID, a.Name, orDash(a.Description), strconv.Itoa(int(a.NbAPIKeys)), formatTime(a.CreatedAt)}
}

func newApplicationCommand(opts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "application", Short: "Manage IAM applications (non-human principals)"}

	var description string
	createCmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			app, err := iam.NewAPI(c.client).CreateApplication(&iam.CreateApplicationRequest{Name: args[0], Description: description})
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), app, []*iam.Application{app}, applicationColumns, applicationRow)
		},
	}
	createCmd.Flags().StringVar(&description, "description", "", "description")

	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List applications",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			resp, err := iam.NewAPI(c.client).ListApplications(&iam.ListApplicationsRequest{}, scw.WithAllPages())
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), resp, resp.Applications, applicationColumns, applicationRow)
		},
	}

	getCmd := &cobra.Command{
		Use:   "get APPLICATION_ID",
		Short: "Show an application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			app, err := iam.NewAPI(c.client).GetApplication(&iam.GetApplicationRequest{ApplicationID: args[0]})
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), app, []*iam.Application{app}, applicationColumns, applicationRow)
		},
	}

	deleteCmd := &cobra.Command{
		Use:   "delete APPLICATION_ID",
		Short: "Delete an application with its API keys and policies",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			if err := iam.NewAPI(c.client).DeleteApplication(&iam.DeleteApplicationRequest{ApplicationID: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted application %s\n", args[0])
			return nil
		},
	}

	cmd.AddCommand(createCmd, listCmd, getCmd, deleteCmd)
	return cmd
}

var apiKeyColumns = []string{"ACCESS_KEY", "BEARER", "DESCRIPTION", "DEFAULT_PROJECT_ID", "EXPIRES_AT", "CREATED_AT"}

func apiKeyRow(k *iam.APIKey) []string {
	bearer := "-"
	switch {
	case k.ApplicationID != nil:
		bearer = "application " + *k.ApplicationID
	case k.UserID != nil:
		bearer = "user " + *k.UserID
	}
	return []string{k.AccessKey, bearer, orDash(k.Description), orDash(k.DefaultProjectID), formatTime(k.ExpiresAt), formatTime(k.CreatedAt)}
}

func newAPIKeyCommand(opts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "api-key", Short: "Manage API keys"}

	var create struct {
		applicationID, userID, description, projectID string
		expiresIn                                     time.Duration
	}
	createCmd := &cobra.Command{
		Use:   "create --application-id ID | --user-id ID",
		Short: "Create an API key; its secret key is shown only once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (create.applicationID == "") == (create.userID == "") {
				return errors.New("pass exactly one of --application-id and --user-id")
			}
			req := &iam.CreateAPIKeyRequest{Description: create.description}
			if create.applicationID != "" {
				req.ApplicationID = &create.applicationID
			}
			if create.userID != "" {
				req.UserID = &create.userID
			}
			if create.projectID != "" {
				req.DefaultProjectID = &create.projectID
			}
			if create.expiresIn > 0 {
				at := time.Now().Add(create.expiresIn).UTC()
				req.ExpiresAt = &at
			}
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			key, err := iam.NewAPI(c.client).CreateAPIKey(req)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				return print(opts.printer(cmd), key, []*iam.APIKey{key}, apiKeyColumns, apiKeyRow)
			}
			secret := ""
			if key.SecretKey != nil {
				secret = *key.SecretKey
			}
			fmt.Fprintf(cmd.OutOrStdout(), "access key: %s\nsecret key: %s\n(the secret key is not shown again)\n", key.AccessKey, secret)
			return nil
		},
	}
	f := createCmd.Flags()
	f.StringVar(&create.applicationID, "application-id", "", "application that bears the key")
	f.StringVar(&create.userID, "user-id", "", "user that bears the key")
	f.StringVar(&create.description, "description", "", "description")
	f.StringVar(&create.projectID, "default-project-id", "", "default project of the key")
	f.DurationVar(&create.expiresIn, "expires-in", 0, "lifetime of the key, e.g. 720h (default: never expires)")

	var bearer string
	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List API keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			req := &iam.ListAPIKeysRequest{}
			if bearer != "" {
				req.BearerID = &bearer
			}
			resp, err := iam.NewAPI(c.client).ListAPIKeys(req, scw.WithAllPages())
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), resp, resp.APIKeys, apiKeyColumns, apiKeyRow)
		},
	}
	listCmd.Flags().StringVar(&bearer, "bearer-id", "", "only keys of this application or user")

	getCmd := &cobra.Command{
		Use:   "get ACCESS_KEY",
		Short: "Show an API key (without its secret)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			key, err := iam.NewAPI(c.client).GetAPIKey(&iam.GetAPIKeyRequest{AccessKey: args[0]})
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), key, []*iam.APIKey{key}, apiKeyColumns, apiKeyRow)
		},
	}

	deleteCmd := &cobra.Command{
		Use:   "delete ACCESS_KEY",
		Short: "Delete an API key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			if err := iam.NewAPI(c.client).DeleteAPIKey(&iam.DeleteAPIKeyRequest{AccessKey: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted API key %s\n", args[0])
			return nil
		},
	}

	cmd.AddCommand(createCmd, listCmd, getCmd, deleteCmd)
	return cmd
}

var policyColumns = []string{"ID", "NAME", "PRINCIPAL", "RULES", "CREATED_AT"}

func policyRow(p *iam.Policy) []string {
	principal := "-"
	switch {
	case p.ApplicationID != nil:
		principal = "application " + *p.ApplicationID
	case p.UserID != nil:
		principal = "user " + *p.UserID
	}
	return []string{p.ID, p.Name, principal, strconv.Itoa(int(p.NbRules)), formatTime(p.CreatedAt)}
}

func newPolicyCommand(opts *clientOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Manage IAM policies"}

	var create struct {
		applicationID, userID, description string
		permissionSets, projectIDs         []string
		organizationWide                   bool
	}
	createCmd := &cobra.Command{
		Use:   "create NAME --permission-set SET [--project-id ID ...|--organization]",
		Short: "Create a policy with one rule for an application or a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (create.applicationID == "") == (create.userID == "") {
				return errors.New("pass exactly one of --application-id and --user-id")
			}
			if len(create.permissionSets) == 0 {
				return errors.New("pass at least one --permission-set, e.g. ServerlessSQLDatabaseReadOnly")
			}
			if (len(create.projectIDs) == 0) == !create.organizationWide {
				return errors.New("pass --project-id (one or more) or --organization, not both")
			}
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			rule := &iam.RuleSpecs{PermissionSetNames: &create.permissionSets}
			if create.organizationWide {
				orgID, ok := c.client.GetDefaultOrganizationID()
				if !ok {
					return errors.New("no organization ID: set SCW_DEFAULT_ORGANIZATION_ID")
				}
				rule.OrganizationID = &orgID
			} else {
				rule.ProjectIDs = &create.projectIDs
			}
			req := &iam.CreatePolicyRequest{Name: args[0], Description: create.description, Rules: []*iam.RuleSpecs{rule}}
			if create.applicationID != "" {
				req.ApplicationID = &create.applicationID
			}
			if create.userID != "" {
				req.UserID = &create.userID
			}
			policy, err := iam.NewAPI(c.client).CreatePolicy(req)
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), policy, []*iam.Policy{policy}, policyColumns, policyRow)
		},
	}
	f := createCmd.Flags()
	f.StringVar(&create.applicationID, "application-id", "", "application the policy applies to")
	f.StringVar(&create.userID, "user-id", "", "user the policy applies to")
	f.StringVar(&create.description, "description", "", "description")
	f.StringSliceVar(&create.permissionSets, "permission-set", nil, "permission set name, repeatable: "+strings.Join([]string{"ServerlessSQLDatabaseFullAccess", "ServerlessSQLDatabaseReadWrite", "ServerlessSQLDatabaseDataReadWrite", "ServerlessSQLDatabaseReadOnly"}, ", "))
	f.StringSliceVar(&create.projectIDs, "project-id", nil, "project the rule applies to, repeatable")
	f.BoolVar(&create.organizationWide, "organization", false, "apply the rule to the whole organization")

	listCmd := &cobra.Command{
		Use:   "list",
		Short: "List policies",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			resp, err := iam.NewAPI(c.client).ListPolicies(&iam.ListPoliciesRequest{}, scw.WithAllPages())
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), resp, resp.Policies, policyColumns, policyRow)
		},
	}

	getCmd := &cobra.Command{
		Use:   "get POLICY_ID",
		Short: "Show a policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			policy, err := iam.NewAPI(c.client).GetPolicy(&iam.GetPolicyRequest{PolicyID: args[0]})
			if err != nil {
				return err
			}
			return print(opts.printer(cmd), policy, []*iam.Policy{policy}, policyColumns, policyRow)
		},
	}

	deleteCmd := &cobra.Command{
		Use:   "delete POLICY_ID",
		Short: "Delete a policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opts.newAPIClient()
			if err != nil {
				return err
			}
			if err := iam.NewAPI(c.client).DeletePolicy(&iam.DeletePolicyRequest{PolicyID: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted policy %s\n", args[0])
			return nil
		},
	}

	cmd.AddCommand(createCmd, listCmd, getCmd, deleteCmd)
	return cmd
}
