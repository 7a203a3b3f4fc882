package host

import (
	"io/fs"
	"testing"
)

// TestMachineMemory: the default budget's base is the smaller of physical
// memory and the cgroup limit (v2 or v1, the process's own cgroup or the
// root a container sees), with "no limit" values ignored.
func TestMachineMemory(t *testing.T) {
	const meminfo = "MemTotal:       24683772 kB\nMemFree:        19411108 kB\n"
	for _, tc := range []struct {
		name   string
		files  map[string]string
		want   uint64
		source string
	}{
		{"physical memory only", map[string]string{"/proc/meminfo": meminfo}, 24683772 << 10, "MemTotal"},
		{"cgroup v2 root", map[string]string{"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "2147483648\n"},
			2 << 30, "cgroup limit /sys/fs/cgroup/memory.max"},
		{"cgroup v2 unlimited", map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "max\n"}, 24683772 << 10, "MemTotal"},
		{"cgroup v2 own cgroup", map[string]string{"/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/system.slice/edgeshard.service\n",
			"/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/system.slice/edgeshard.service/memory.max": "1073741824\n"},
			1 << 30, "cgroup limit /sys/fs/cgroup/system.slice/edgeshard.service/memory.max"},
		{"cgroup v1 unlimited", map[string]string{"/proc/meminfo": meminfo, "/proc/self/cgroup": "4:memory:/process_api/x\n",
			"/sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": "9223372036854771712\n"}, 24683772 << 10, "MemTotal"},
		{"cgroup v1 limit", map[string]string{"/proc/meminfo": meminfo, "/proc/self/cgroup": "5:cpu,memory:/docker/abc\n",
			"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "536870912\n"}, 512 << 20, "cgroup limit /sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
		{"nothing readable", nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := func(name string) ([]byte, error) {
				if s, ok := tc.files[name]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			}
			got, source := machineMemory(read)
			if got != tc.want || source != tc.source {
				t.Fatalf("machineMemory = %d (%s), want %d (%s)", got, source, tc.want, tc.source)
			}
		})
	}
}
