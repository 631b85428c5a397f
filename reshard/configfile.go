package reshard

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// RewriteLayout replaces the shards and keyspace of the config file at
// path with l, keeping the rest of the file, comments included, so that a
// proxy restarted after cutover serves the new layout.
func RewriteLayout(path string, l Layout) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("%s: not a YAML mapping", path)
	}
	root := doc.Content[0]
	for key, value := range map[string]any{"shards": l.Shards, "keyspace": l.Keyspace} {
		var n yaml.Node
		if err := n.Encode(value); err != nil {
			return err
		}
		setKey(root, key, &n)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return err
	}
	return writeFileAtomic(path, out.Bytes(), info.Mode().Perm())
}

func setKey(m *yaml.Node, key string, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			value.HeadComment, value.LineComment = m.Content[i+1].HeadComment, m.Content[i+1].LineComment
			m.Content[i+1] = value
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, value)
}
