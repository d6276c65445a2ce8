// The suite's independent FHIR validator: HAPI FHIR 8.8.1's FhirInstanceValidator
// (the HL7 InstanceValidator of org.hl7.fhir.core, as in the HL7 validator CLI)
// over many files in one JVM, fully offline.
//
//   java -cp 'libs/*:classes' S117Validate --defs DIR [--defs DIR ...] FILE... | @LISTFILE
//
// Definitions: the FHIR R4 core (hapi-fhir-validation-resources-r4, on the class
// path) plus every conformance resource (*.json, *.xml) found under each --defs folder
// (UK Core copies, the hub's package/ folder). Extensions must be defined
// (anyExtensionsAllowed=false) and declared profiles must be known, so an
// undefined hub extension or profile is an error. No terminology server:
// codes are checked against the CodeSystems loaded; a code system that is not
// loaded (SNOMED CT, say) is a warning.
//
// Output: one JSON object per line per finding
//   {"file":..., "severity":"error|warning|information|fatal", "location":..., "line":N, "messageId":..., "message":...}
// then a last line {"summary": true, "files": N, "error": N, "warning": N, "information": N}.
// Exit status 0 if no error or fatal finding, 1 if any, 2 on bad usage.

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ResultSeverityEnum;
import ca.uhn.fhir.validation.SingleValidationMessage;
import ca.uhn.fhir.validation.ValidationResult;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.PrePopulatedValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.UnknownCodeSystemWarningValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;
import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.ElementDefinition;
import org.hl7.fhir.r4.model.StructureDefinition;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Stream;

public final class S117Validate {
    private static final Set<String> DEFINITION_TYPES = Set.of(
            "StructureDefinition", "CodeSystem", "ValueSet", "NamingSystem");

    public static void main(String[] args) throws IOException {
        List<Path> defs = new ArrayList<>();
        List<Path> files = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--defs") && i + 1 < args.length) {
                defs.add(Path.of(args[++i]));
            } else if (args[i].startsWith("@")) {
                for (String line : Files.readAllLines(Path.of(args[i].substring(1)), StandardCharsets.UTF_8)) {
                    if (!line.isBlank()) files.add(Path.of(line.strip()));
                }
            } else if (args[i].startsWith("--")) {
                System.err.println("S117Validate: unknown option " + args[i]);
                System.exit(2);
            } else {
                files.add(Path.of(args[i]));
            }
        }
        if (files.isEmpty()) {
            System.err.println("usage: S117Validate --defs DIR ... FILE... | @LISTFILE");
            System.exit(2);
        }

        FhirContext ctx = FhirContext.forR4();
        IParser parser = ctx.newJsonParser();
        IParser xmlParser = ctx.newXmlParser();
        PrePopulatedValidationSupport loaded = new PrePopulatedValidationSupport(ctx);
        int definitions = 0;
        for (Path dir : defs) {
            List<Path> jsons;
            try (Stream<Path> walk = Files.walk(dir)) {
                jsons = walk.filter(p -> p.toString().endsWith(".json") || p.toString().endsWith(".xml"))
                        .sorted().toList();
            }
            for (Path p : jsons) {
                String name = p.getFileName().toString();
                if (name.equals("package.json") || name.startsWith(".")) continue;
                String text = Files.readString(p, StandardCharsets.UTF_8);
                boolean xml = name.endsWith(".xml");
                String type = xml ? xmlRootName(text) : resourceType(text);
                if (type == null || !DEFINITION_TYPES.contains(type)) continue;
                IBaseResource res = (xml ? xmlParser : parser).parseResource(text);
                if (res instanceof StructureDefinition sd) dropCrossVersionExtensions(sd);
                loaded.addResource(res);
                definitions++;
            }
        }
        System.err.println("S117Validate: " + definitions + " definitions loaded from " + defs.size() + " folder(s)");

        UnknownCodeSystemWarningValidationSupport unknownSystems = new UnknownCodeSystemWarningValidationSupport(ctx);
        // A code system no loaded definition has (SNOMED CT, say): a warning, as
        // without a terminology server. The suite's test fails on any such
        // finding that names the hub's own canonical base.
        unknownSystems.setNonExistentCodeSystemSeverity(IValidationSupport.IssueSeverity.WARNING);
        ValidationSupportChain chain = new ValidationSupportChain(
                new DefaultProfileValidationSupport(ctx),
                loaded,
                new CommonCodeSystemsTerminologyService(ctx),
                new InMemoryTerminologyServerValidationSupport(ctx),
                new SnapshotGeneratingValidationSupport(ctx),
                unknownSystems);
        FhirInstanceValidator module = new FhirInstanceValidator(chain);
        module.setAnyExtensionsAllowed(false);
        module.setErrorForUnknownProfiles(true);
        module.setNoTerminologyChecks(false);
        FhirValidator validator = ctx.newValidator().registerValidatorModule(module);

        Map<String, Integer> counts = new TreeMap<>(Map.of("fatal", 0, "error", 0, "warning", 0, "information", 0));
        StringBuilder out = new StringBuilder();
        for (Path f : files) {
            String text = Files.readString(f, StandardCharsets.UTF_8);
            ValidationResult result = validator.validateWithResult(text);
            for (SingleValidationMessage m : result.getMessages()) {
                String sev = m.getSeverity() == null ? "information" : m.getSeverity().getCode();
                counts.merge(sev, 1, Integer::sum);
                out.setLength(0);
                out.append("{\"file\":").append(q(f.toString()))
                        .append(",\"severity\":").append(q(sev))
                        .append(",\"location\":").append(q(m.getLocationString()))
                        .append(",\"line\":").append(m.getLocationLine() == null ? "null" : m.getLocationLine().toString())
                        .append(",\"messageId\":").append(q(m.getMessageId()))
                        .append(",\"message\":").append(q(m.getMessage()))
                        .append('}');
                System.out.println(out);
            }
        }
        System.out.println("{\"summary\":true,\"files\":" + files.size()
                + ",\"definitions\":" + definitions
                + ",\"fatal\":" + counts.get("fatal") + ",\"error\":" + counts.get("error")
                + ",\"warning\":" + counts.get("warning") + ",\"information\":" + counts.get("information") + "}");
        System.out.flush();
        System.exit(counts.get("fatal") + counts.get("error") > 0 ? 1 : 0);
    }

    // UK Core Patient slices a cross-version extension (http://hl7.org/fhir/6.0/...
    // extension-Patient.fetalStatus) whose definition comes from the xver packages,
    // which no reachable registry serves; the snapshot generator cannot resolve it.
    // Such slices (and their children) are dropped from the loaded differential,
    // and said so on stderr: an instance using one is then reported as an unknown
    // extension, never passed silently. The files themselves are left as copied.
    private static void dropCrossVersionExtensions(StructureDefinition sd) {
        List<ElementDefinition> elements = sd.getDifferential().getElement();
        List<String> dropped = new ArrayList<>();
        for (ElementDefinition e : elements) {
            for (ElementDefinition.TypeRefComponent t : e.getType()) {
                for (var profile : t.getProfile()) {
                    if (profile.getValue() != null && profile.getValue().matches("http://hl7\\.org/fhir/[0-9.]+/StructureDefinition/.*")) {
                        dropped.add(e.getId());
                    }
                }
            }
        }
        if (dropped.isEmpty()) return;
        elements.removeIf(e -> dropped.stream().anyMatch(d -> e.getId().equals(d) || e.getId().startsWith(d + ".")));
        System.err.println("S117Validate: " + sd.getUrl() + ": cross-version extension slice(s) not loaded: " + dropped);
    }

    private static String xmlRootName(String xml) {
        var m = java.util.regex.Pattern.compile("<([A-Za-z]+)[\\s>][^<]*xmlns=\"http://hl7.org/fhir\"").matcher(xml);
        return m.find() ? m.group(1) : null;
    }

    private static String resourceType(String json) {
        int i = json.indexOf("\"resourceType\"");
        if (i < 0) return null;
        int colon = json.indexOf(':', i);
        int start = json.indexOf('"', colon + 1);
        int end = json.indexOf('"', start + 1);
        return start < 0 || end < 0 ? null : json.substring(start + 1, end);
    }

    private static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
                }
            }
        }
        return b.append('"').toString();
    }
}
