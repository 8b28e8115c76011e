package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/swamp-club/nsdriver"
)

const cleanupUsage = `Usage: nsdriver cleanup [flags]

Destroys instances labelled nsdriver/managed-by=nsdriver that were created
longer ago than --older-than: what a killed process left behind. Warm-pool
and fleet VMs only with --include-pool and --include-fleet.

Flags:
`

// cmdCleanup destroys instances labelled nsdriver/managed-by=nsdriver that
// are older than --older-than: leftovers of killed processes.
func cmdCleanup(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	c := newCommon("cleanup", cleanupUsage, connectionKeys)
	olderThan := c.fs.Duration("older-than", 30*time.Minute, "only instances created longer ago than this")
	includePool := c.fs.Bool("include-pool", false, "also destroy warm-pool instances")
	includeFleet := c.fs.Bool("include-fleet", false, "also destroy fleet VMs (they may be busy workers)")
	dryRun := c.fs.Bool("dry-run", false, "list what would be destroyed; destroy nothing")
	if done, err := c.parse(args, stdout); done || err != nil {
		return 0, err
	}
	if c.emulator {
		// A fresh in-process emulator has nothing to clean up.
		return 0, usageError{"cleanup --emulator would search a new, empty emulator and always find nothing; to clean up an emulator you started with `nsdriver emulator`, point at it with --endpoint (its NSC_ENDPOINT) and --token"}
	}
	cfg, err := c.config()
	if err != nil {
		return 0, err
	}
	tgt, err := c.connect(&cfg, false, stderr, "cleanup")
	if err != nil {
		return 0, err
	}
	defer tgt.close()
	client, err := nsdriver.NewClient(nsdriver.WithTokenSource(tgt.token), nsdriver.WithEndpoint(cfg.Endpoint), nsdriver.WithRegion(cfg.Region))
	if err != nil {
		return 0, err
	}
	instances, err := client.ListAllInstances(ctx, &nsdriver.ListInstancesRequest{
		LabelFilter: []nsdriver.LabelFilterEntry{{Name: "nsdriver/managed-by", Value: "nsdriver", Op: nsdriver.LabelFilterEqual}},
	})
	if err != nil {
		return 0, fmt.Errorf("listing instances: %w", err)
	}
	now := time.Now()
	var found, destroyed, failed, younger int
	for _, m := range instances {
		age := now.Sub(m.CreatedAt.Time)
		isPool := m.LabelValue("nsdriver/pool") != ""
		isFleet := m.LabelValue("nsdriver/fleet") != ""
		if m.Status.Gone() || (isPool && !*includePool) || (isFleet && !*includeFleet) {
			continue
		}
		if age < *olderThan {
			younger++
			continue
		}
		found++
		what := fmt.Sprintf("%s (created %s ago, %s %s%s)", m.InstanceID, age.Round(time.Second),
			m.LabelValue("nsdriver/model-type"), m.LabelValue("nsdriver/method"), map[bool]string{true: ", pool"}[isPool])
		if *dryRun {
			fmt.Fprintf(stdout, "would destroy %s\n", what)
			continue
		}
		if err := client.DestroyInstance(ctx, &nsdriver.DestroyInstanceRequest{InstanceID: m.InstanceID, Reason: "nsdriver cleanup"}); err != nil {
			failed++
			fmt.Fprintf(stderr, "nsdriver: could not destroy %s: %s\n", m.InstanceID, nsdriver.UserMessage(err))
			continue
		}
		destroyed++
		fmt.Fprintf(stdout, "destroyed %s\n", what)
	}
	if found == 0 && younger > 0 {
		fmt.Fprintf(stdout, "no instance is older than %s; %d younger one(s) may still be in use. To see them: nsdriver cleanup --dry-run --older-than 0s\n", *olderThan, younger)
		return exitOK, nil
	}
	if *dryRun {
		fmt.Fprintf(stdout, "%d instance(s) older than %s would be destroyed\n", found, *olderThan)
		return exitOK, nil
	}
	fmt.Fprintf(stdout, "destroyed %d of %d instance(s) older than %s\n", destroyed, found, *olderThan)
	if failed > 0 {
		return exitDriver, nil
	}
	return exitOK, nil
}
