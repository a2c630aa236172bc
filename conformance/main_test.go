package conformance_test

import (
	"os"
	"testing"

	"github.com/berth-registry/berth/conformance/internal/berthtest"
)

func TestMain(m *testing.M) { os.Exit(berthtest.Main(m)) }
