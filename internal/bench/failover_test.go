package bench

import "testing"

func TestSpreadOf(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		median, max float64
	}{
		{nil, 0, 0},
		{[]float64{3}, 3, 3},
		{[]float64{3, 1, 2}, 2, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 4},
	} {
		if got := spreadOf(tc.in); got.Median != tc.median || got.Max != tc.max {
			t.Errorf("spreadOf(%v) = %+v, want median %v max %v", tc.in, got, tc.median, tc.max)
		}
	}
}
