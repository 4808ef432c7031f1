// Command gen produces ../cases.json: expected outputs of Go's own
// text/template for the Rust renderer in server/src/template.
//
// Regenerate (Go standard library only, no modules to download):
//
//	cd server/tests-data/templates/gen && GOFLAGS=-mod=mod go run . > ../cases.json
//
// "render" cases execute a template over already-converted data (the map
// Ollama hands to text/template). "prompt" cases run a port of Ollama's
// template.Execute (template/template.go) over API-level messages and tools.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
)

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

type renderCase struct {
	Name     string          `json:"name"`
	Template string          `json:"template,omitempty"`
	Inline   string          `json:"inline,omitempty"`
	Data     json.RawMessage `json:"data"`
	Expected string          `json:"expected"`
	Error    bool            `json:"error,omitempty"`
}

type promptCase struct {
	Name     string          `json:"name"`
	Template string          `json:"template"`
	Values   json.RawMessage `json:"values"`
	Expected string          `json:"expected"`
}

type output struct {
	Render []renderCase `json:"render"`
	Prompt []promptCase `json:"prompt"`
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func readTemplate(name string) string {
	b, err := os.ReadFile(filepath.Join("..", name))
	must(err)
	return string(b)
}

// render executes src over data decoded as JSON (numbers become float64).
func render(src, data string) (string, bool) {
	var v any
	must(json.Unmarshal([]byte(data), &v))
	t, err := template.New("").Funcs(funcs).Parse(src)
	if err != nil {
		return "", true
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return "", true
	}
	return b.String(), false
}

// Converted data sets, as Ollama's Execute builds them for .Messages templates.
func msg(role, content string) map[string]any {
	return map[string]any{"Role": role, "Content": content, "Thinking": "", "Images": nil,
		"ToolCalls": nil, "ToolName": "", "ToolCallID": ""}
}

func data(system string, tools any, msgs ...map[string]any) string {
	b, err := json.Marshal(map[string]any{"System": system, "Messages": msgs, "Tools": tools,
		"Response": "", "Think": false, "ThinkLevel": "", "IsThinkSet": false})
	must(err)
	return string(b)
}

var weatherTool = map[string]any{
	"type": "function",
	"function": map[string]any{
		"name":        "get_weather",
		"description": "Get the current weather <for> a city & country",
		"parameters": map[string]any{
			"type":     "object",
			"required": []string{"city"},
			"properties": map[string]any{
				"city": map[string]any{"type": "string", "description": "The city"},
				"unit": map[string]any{"type": "string", "description": "Unit", "enum": []string{"celsius", "fahrenheit"}},
			},
		},
	},
}

func toolCallMsg() map[string]any {
	m := msg("assistant", "")
	m["ToolCalls"] = []any{map[string]any{"ID": "", "Function": map[string]any{
		"Index": 0, "Name": "get_weather", "Arguments": map[string]any{"city": "Paris", "days": 3}}}}
	return m
}

func toolResultMsg() map[string]any {
	m := msg("tool", `{"temp": 21}`)
	m["ToolName"] = "get_weather"
	return m
}

var dataSets = []struct{ name, data string }{
	{"system-user", data("You are terse.", nil, msg("system", "You are terse."), msg("user", "Hello <there> & bye"))},
	{"user", data("", nil, msg("user", "Hi"))},
	{"multi-turn", data("Be kind.", nil, msg("system", "Be kind."), msg("user", "Hi"), msg("assistant", "Hello! How can I help?"),
		msg("user", "Tell me a joke.\nPlease."))},
	{"no-system-multi", data("", nil, msg("user", "Q1"), msg("assistant", "A1"), msg("user", "Q2"))},
	{"tools", data("Use tools.", []any{weatherTool}, msg("system", "Use tools."), msg("user", "Weather in Paris?"), toolCallMsg(),
		toolResultMsg())},
	{"tools-pending", data("", []any{weatherTool}, msg("user", "Weather in Paris?"))},
}

var templateFiles = []string{
	"gemma3-instruct.gotmpl", "gemma-instruct.gotmpl", "llama3-instruct.gotmpl", "chatml.gotmpl",
	"mistral-instruct.gotmpl", "phi-3.gotmpl", "command-r.gotmpl", "llama2-chat.gotmpl", "zephyr.gotmpl",
	"alpaca.gotmpl", "vicuna.gotmpl", "granite-instruct.gotmpl", "openchat.gotmpl", "falcon-instruct.gotmpl",
	"codellama-70b-instruct.gotmpl", "starcoder2-instruct.gotmpl", "solar-instruct.gotmpl", "magicoder.gotmpl",
	"alfred.gotmpl", "chatqa.gotmpl", "qwen2.5-tools.gotmpl", "llama3.1-tools.gotmpl", "mistral-tools.gotmpl",
}

const langData = `{"A":"x","N":null,"F":1000000,"G":3.5,"I":42,"L":[1,"a",null,{"k":2}],"M":{"b":1,"a":[true]},"E":"","S":"<b>&'\"","Z":0,"T":true}`

var langCases = []string{
	`{{ .Missing }}|{{ .N }}|{{ print .Missing }}|{{ print .N }}|{{ .Missing.X }}`,
	`{{ .N.X }}`, `{{ .A.B }}`,
	`{{ eq .Missing "x" }} {{ eq .N "x" }} {{ if .Missing }}t{{else}}f{{end}}`,
	`{{ .F }} {{ .G }} {{ .I }} {{ .L }} {{ .M }} {{ .T }} {{ .Z }}`,
	`{{ print 1 2 "a" "b" 3 }}|{{ println 1 "a" }}|{{ print "a" 1 2 "b" }}|{{ print true false nil }}`,
	`{{ printf "%v %s %d %q" .L .A .I .A }}`,
	`{{ 1e6 }} {{ 1.0 }} {{ 0x10 }} {{ 'a' }} {{ 1.5e-7 }} {{ 123456789.0 }} {{ -7 }} {{ 0o17 }} {{ 017 }} {{ 1_000 }}`,
	`{{ eq .I 42 }}`, `{{ eq .I 42.0 }}`, `{{ lt 1 2.0 }}`, `{{ eq .M .M }}`, `{{ eq .L .L }}`,
	`{{ len .L }} {{ index .L 1 }} {{ index .M "a" }} {{ index .M "zz" }} {{ index "abc" 1 }}`,
	`{{ index .L 10 }}`, `{{ index .Missing 1 }}`, `{{ slice .A 0 5 }}`, `{{ len .Missing }}`, `{{ len 3 }}`,
	`{{ slice "hello" 1 3 }} {{ slice .L 1 }} {{ slice .L 1 2 }} {{ slice "abc" }}`,
	`{{ html "<a href='x'>&\"" }} {{ html .S 1 }} {{ js "<a 'x'>\"&=\n" }} {{ urlquery "a b&c/d?é" }}`,
	`{{ and 1 0 2 }} {{ or 0 "" "x" }} {{ not .E }} {{ and 1 2 }} {{ or 0 "" }} {{ and .Missing 1 }} {{ not .Missing }}`,
	`{{ and false .Missing.X.Y }}{{ or true (index .L 99) }}`,
	`{{ range $k, $v := .M }}{{$k}}={{$v}};{{end}}`, `{{ range .Missing }}x{{else}}empty{{end}}`,
	`{{ range $v := .L }}<{{ $v }}>{{ end }}`, `{{ range .L }}[{{ . }}]{{ end }}`, `{{ range .E }}x{{ else }}{{ .A }}{{ end }}`,
	`{{ range $i, $e := .L }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $i }}{{ end }}`,
	`{{ range $i, $e := .L }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $i }}{{ end }}`,
	`{{ range 3 }}{{ . }}{{ end }}`, `{{ range .A }}{{ . }}{{ end }}`,
	`{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ $y }}{{ end }}{{ $x }}`,
	`{{ $x := "outer" }}{{ range .L }}{{ $x := "inner" }}{{ end }}{{ $x }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}`,
	`{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}`,
	`{{ with $v := .A }}{{ $v }}{{ . }}{{ end }}{{ with .E }}y{{ else }}n{{ end }}{{ with .Missing }}{{ else }}w{{ . }}{{ end }}`,
	`{{ if .E }}a{{ else if .Z }}b{{ else if .T }}c{{ else }}d{{ end }}`,
	`{{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ ge "b" "a" }} {{ le 2 2 }} {{ gt 3.5 .G }} {{ lt .G .F }} {{ eq .T true }} {{ eq nil nil }}`,
	`{{ lt true false }}`, `{{ eq 1 "1" }}`, `{{ ne .N .Missing }}`,
	`{{ json .M }} {{ json "<&>" }} {{ json .F }} {{ json .G }} {{ json 1e21 }} {{ json 0.000001 }} {{ json 1e-7 }} {{ json .L }} {{ json .N }} {{ json .Missing }} {{ json 3 }} {{ json .S }}`,
	`{{ json "tab\tnl\nquote\"bs\\ \u2028 \u00e9 \x01" }}`,
	`{{ printf "%v" .N }} {{ printf "%x %X %5d|%-5s|%05.2f %t %c %U %e %g" 255 255 3 "ab" 3.14159 true 65 65 1234.5678 0.0000123 }}`,
	`{{ printf "%s" 3 }} {{ printf "%d" "x" }} {{ printf "%d %d" 1 }} {{ printf "%d" 1 2 }} {{ printf "%s" .Missing }}`,
	`{{ printf "%v" .M }} {{ printf "%q" .L }} {{ printf "%s" .L }} {{ printf "%d" .I }}`,
	`{{ printf "%v" 1e6 }} {{ printf "%.3f" 2.0 }} {{ printf "%5.1s|" "abc" }} {{ printf "%%" }} {{ printf "%z" 1 }} {{ printf "%+d %+.1e % d" 5 12345.678 7 }}`,
	`{{ printf "%T %T %T %T %T" 1 .F .A .M .L }} {{ printf "%6.2f|%-8.3g|%08.3f" 3.14159 1234567.0 -3.5 }}`,
	`{{ printf "%g %g %g %G %.3g %.10g" 100000.0 1000000.0 0.0001 1e-5 1234.0 0.1 }}`,
	`{{ print .I }} {{ print 100000000000000000000.0 }} {{ print 0.1 }} {{ print 1e-5 }} {{ print 12345678.9 }} {{ print -0.0 }}`,
	`{{ .L | len }} {{ "x" | printf "%s-%s" "y" }} {{ (index .L 3).k }} {{ .A | printf "%q" | len }}`,
	`{{ .M.a }} {{ $.M.b }} {{ $ := 1 }}{{ $ }}`,
	`a  {{- " b " -}}  c {{- /* comment */ -}}  d {{/* c2 */}} e {{- 3}} {{3 -}} f`,
	"line1\n  {{- if true -}}\n  x\n  {{- end -}}\n\nend",
	"{{`raw \\n string`}} {{ \"esc \\t \\u00e9 \\x41\" }}",
	`{{ define "T" }}<{{ . }}>{{ end }}{{ template "T" .A }}{{ template "T" }}{{ block "B" .I }}[{{ . }}]{{ end }}`,
	`{{ define "R" }}{{ if gt . 0 }}{{ . }}{{ template "R" (slice "x" 0 0) }}{{ end }}{{ end }}{{ template "R" 3 }}`,
	`{{ if }}`, `{{ end }}`, `{{ .A`, `{{ $undefined }}`, `{{ nofunc 1 }}`, `{{ break }}`, `{{ range .L }}{{ else if .A }}{{ end }}`,
	`{{ "unterminated }}`, `{{ (1 }}`, `{{ 1) }}`, `{{ .A | 3 }}`, `{{ .A 1 }}`, `{{ nil }}`, `{{ 3 4 }}`, `{{/* unclosed`,
	`{{ .A }}{{ template "nope" }}`, `{{ printf 3 }}`, `{{ index .L "a" }}`, `{{ not }}`, `{{ and }}`, `{{ eq 1 }}`,
	`{{ $x := 1 }}{{ $x = "s" }}{{ $x }}{{ $y = 2 }}`, `{{ .L.foo }}`, `{{ .M.a.b }}`,
}

func main() {
	var out output
	for _, file := range templateFiles {
		src := readTemplate(file)
		for _, ds := range dataSets {
			expected, failed := render(src, ds.data)
			if failed {
				must(fmt.Errorf("%s/%s failed", file, ds.name))
			}
			out.Render = append(out.Render, renderCase{Name: strings.TrimSuffix(file, ".gotmpl") + "/" + ds.name,
				Template: file, Data: json.RawMessage(ds.data), Expected: expected})
		}
	}
	for i, src := range langCases {
		expected, failed := render(src, langData)
		out.Render = append(out.Render, renderCase{Name: fmt.Sprintf("lang/%02d", i), Inline: src,
			Data: json.RawMessage(langData), Expected: expected, Error: failed})
	}
	for _, pc := range promptCases {
		var v Values
		must(json.Unmarshal([]byte(pc.values), &v))
		t, err := Parse(readTemplate(pc.template))
		must(err)
		var b bytes.Buffer
		must(t.Execute(&b, v))
		out.Prompt = append(out.Prompt, promptCase{Name: pc.name, Template: pc.template,
			Values: json.RawMessage(pc.values), Expected: b.String()})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	must(enc.Encode(out))
}

var promptCases = []struct{ name, template, values string }{
	{"gemma3/system-user", "gemma3-instruct.gotmpl",
		`{"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Hello"}]}`},
	{"gemma3/user", "gemma3-instruct.gotmpl", `{"messages":[{"role":"user","content":"Hello"}]}`},
	{"gemma3/multi-turn", "gemma3-instruct.gotmpl",
		`{"messages":[{"role":"system","content":"Sys A"},{"role":"system","content":"Sys B"},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"},{"role":"user","content":"Joke?"},{"role":"user","content":"Short one."}]}`},
	{"gemma3/assistant-last", "gemma3-instruct.gotmpl",
		`{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hel"}]}`},
	{"legacy/system-user", "legacy-system-prompt.gotmpl",
		`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`},
	{"legacy/multi-turn", "legacy-system-prompt.gotmpl",
		`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"},{"role":"user","content":"Bye"}]}`},
	{"legacy/assistant-last", "legacy-system-prompt.gotmpl",
		`{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hel"}]}`},
	{"legacy/prompt-suffix", "legacy-system-prompt.gotmpl", `{"prompt":"def f(","suffix":"return x"}`},
	{"chatml/force-legacy", "chatml.gotmpl",
		`{"messages":[{"role":"system","content":"S"},{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo"},{"role":"user","content":"Q"}],"force_legacy":true}`},
	{"qwen2.5/tools", "qwen2.5-tools.gotmpl",
		`{"messages":[{"role":"system","content":"Use tools."},{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris","days":3}}}]},{"role":"tool","content":"{\"temp\": 21}","tool_name":"get_weather"}],` +
			`"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather <now>","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"},"unit":{"type":["string","null"],"enum":["c","f"]}}}}}]}`},
	{"llama3.1/tools", "llama3.1-tools.gotmpl",
		`{"messages":[{"role":"user","content":"Weather in Paris?"}],` +
			`"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string","description":"The city"}}}}}]}`},
	{"command-r/tools", "command-r.gotmpl",
		`{"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]}],` +
			`"tools":[{"type":"function","function":{"name":"get_weather","description":"Get the weather","parameters":{"type":"object","properties":{"city":{"type":"string","description":"The city"}}}}}]}`},
	{"think/flags", "think-flags.gotmpl", `{"messages":[{"role":"user","content":"Hi"}],"think":true,"think_level":"high","is_think_set":true}`},
}

// ---- Minimal port of ollama/template/template.go (Execute and helpers). ----

type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}

type ToolCallFunction struct {
	Index     int            `json:"index"`
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	Images     []string   `json:"images,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type PropertyType []string

func (pt *PropertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt PropertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

func (pt PropertyType) String() string {
	if len(pt) == 0 {
		return ""
	}
	if len(pt) == 1 {
		return pt[0]
	}
	return fmt.Sprintf("%v", []string(pt))
}

type ToolProperty struct {
	AnyOf       []ToolProperty `json:"anyOf,omitempty"`
	Type        PropertyType   `json:"type,omitempty"`
	Items       any            `json:"items,omitempty"`
	Description string         `json:"description,omitempty"`
	Enum        []any          `json:"enum,omitempty"`
	Properties  any            `json:"properties,omitempty"`
	Required    []string       `json:"required,omitempty"`
}

type Tool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		Parameters  struct {
			Type       string                  `json:"type"`
			Defs       any                     `json:"$defs,omitempty"`
			Items      any                     `json:"items,omitempty"`
			Required   []string                `json:"required,omitempty"`
			Properties map[string]ToolProperty `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type Values struct {
	Messages    []Message `json:"messages"`
	Tools       []Tool    `json:"tools"`
	Prompt      string    `json:"prompt"`
	Suffix      string    `json:"suffix"`
	Think       bool      `json:"think"`
	ThinkLevel  string    `json:"think_level"`
	IsThinkSet  bool      `json:"is_think_set"`
	ForceLegacy bool      `json:"force_legacy"`
}

type Template struct{ *template.Template }

var response = parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{NodeType: parse.NodePipe,
	Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand,
		Args: []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}}}}}}

func Parse(s string) (*Template, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(s)
	if err != nil {
		return nil, err
	}
	t := Template{tmpl}
	vars := t.Vars()
	if !contains(vars, "messages") && !contains(vars, "response") {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, &response)
	}
	return &t, nil
}

func (t *Template) Vars() []string {
	var vars []string
	for _, tt := range t.Templates() {
		for _, n := range tt.Root.Nodes {
			vars = append(vars, Identifiers(n)...)
		}
	}
	set := map[string]bool{}
	for _, n := range vars {
		set[strings.ToLower(n)] = true
	}
	var keys []string
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (t *Template) Execute(w *bytes.Buffer, v Values) error {
	system, messages := collate(v.Messages)
	vars := t.Vars()
	if v.Prompt != "" && v.Suffix != "" {
		return t.Template.Execute(w, map[string]any{"Prompt": v.Prompt, "Suffix": v.Suffix, "Response": "",
			"Think": v.Think, "ThinkLevel": v.ThinkLevel, "IsThinkSet": v.IsThinkSet})
	} else if !v.ForceLegacy && contains(vars, "messages") {
		return t.Template.Execute(w, map[string]any{"System": system, "Messages": convertMessagesForTemplate(messages),
			"Tools": convertToolsForTemplate(v.Tools), "Response": "", "Think": v.Think, "ThinkLevel": v.ThinkLevel,
			"IsThinkSet": v.IsThinkSet})
	}

	system = ""
	var b bytes.Buffer
	var prompt, response string
	for _, m := range messages {
		execute := func() error {
			if err := t.Template.Execute(&b, map[string]any{"System": system, "Prompt": prompt, "Response": response,
				"Think": v.Think, "ThinkLevel": v.ThinkLevel, "IsThinkSet": v.IsThinkSet}); err != nil {
				return err
			}
			system, prompt, response = "", "", ""
			return nil
		}
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := execute(); err != nil {
					return err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := execute(); err != nil {
					return err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}

	var cut bool
	nodes := deleteNode(t.Template.Root.Copy(), func(n parse.Node) bool {
		if field, ok := n.(*parse.FieldNode); ok && contains(field.Ident, "Response") {
			cut = true
			return false
		}
		return cut
	})
	tree := parse.Tree{Root: nodes.(*parse.ListNode)}
	if err := template.Must(template.New("").AddParseTree("", &tree)).Execute(&b, map[string]any{
		"System": system, "Prompt": prompt, "Response": response,
		"Think": v.Think, "ThinkLevel": v.ThinkLevel, "IsThinkSet": v.IsThinkSet}); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + msgs[i].Content
		} else {
			collated = append(collated, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), collated
}

type templateTools []templateTool

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateProperties map[string]ToolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

func (t templateTool) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

func convertToolsForTemplate(tools []Tool) templateTools {
	if tools == nil {
		return nil
	}
	result := make(templateTools, len(tools))
	for i, tool := range tools {
		p := tool.Function.Parameters
		result[i] = templateTool{Type: tool.Type, Items: tool.Items, Function: templateToolFunction{
			Name: tool.Function.Name, Description: tool.Function.Description,
			Parameters: templateToolFunctionParameters{Type: p.Type, Defs: p.Defs, Items: p.Items,
				Required: p.Required, Properties: templateProperties(p.Properties)}}}
	}
	return result
}

func convertMessagesForTemplate(messages []*Message) []*templateMessage {
	if messages == nil {
		return nil
	}
	result := make([]*templateMessage, len(messages))
	for i, msg := range messages {
		var toolCalls []templateToolCall
		for _, tc := range msg.ToolCalls {
			toolCalls = append(toolCalls, templateToolCall{ID: tc.ID, Function: templateToolCallFunction{
				Index: tc.Function.Index, Name: tc.Function.Name, Arguments: templateArgs(tc.Function.Arguments)}})
		}
		result[i] = &templateMessage{Role: msg.Role, Content: msg.Content, Thinking: msg.Thinking, Images: msg.Images,
			ToolCalls: toolCalls, ToolName: msg.ToolName, ToolCallID: msg.ToolCallID}
	}
	return result
}

func Identifiers(n parse.Node) []string {
	switch n := n.(type) {
	case *parse.ListNode:
		var names []string
		for _, n := range n.Nodes {
			names = append(names, Identifiers(n)...)
		}
		return names
	case *parse.TemplateNode:
		if n.Pipe == nil {
			return nil
		}
		return Identifiers(n.Pipe)
	case *parse.ActionNode:
		return Identifiers(n.Pipe)
	case *parse.BranchNode:
		names := Identifiers(n.Pipe)
		for _, n := range []*parse.ListNode{n.List, n.ElseList} {
			if n != nil {
				names = append(names, Identifiers(n)...)
			}
		}
		return names
	case *parse.IfNode:
		return Identifiers(&n.BranchNode)
	case *parse.RangeNode:
		return Identifiers(&n.BranchNode)
	case *parse.WithNode:
		return Identifiers(&n.BranchNode)
	case *parse.PipeNode:
		var names []string
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				names = append(names, Identifiers(a)...)
			}
		}
		return names
	case *parse.FieldNode:
		return n.Ident
	case *parse.VariableNode:
		return n.Ident
	}
	return nil
}

func deleteNode(n parse.Node, fn func(parse.Node) bool) parse.Node {
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if fn(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if n := walk(c); n != nil {
					nodes = append(nodes, n)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.WithNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.RangeNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			n := walk(t.Pipe)
			if n == nil {
				return nil
			}
			t.Pipe = n.(*parse.PipeNode)
		case *parse.PipeNode:
			var commands []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if n := walk(a); n != nil {
						args = append(args, n)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				commands = append(commands, c)
			}
			if len(commands) == 0 {
				return nil
			}
			t.Cmds = commands
		}
		return n
	}
	return walk(n)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
