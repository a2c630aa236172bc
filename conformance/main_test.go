package conformance_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
	"github.com/berth-registry/berth/internal/testserver/postgres"
	"github.com/berth-registry/berth/internal/testserver/versitygw"
)

// gw is the S3 server of the tests that run berth on a bucket, pg the
// PostgreSQL server of those that run it on a database.
var (
	gw = versitygw.New()
	pg = postgres.New()
)

func TestMain(m *testing.M) {
	code := berthtest.Main(m)
	if err := gw.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testserver/versitygw:", err)
		if code == 0 {
			code = 1
		}
	}
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "testserver/postgres:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}
