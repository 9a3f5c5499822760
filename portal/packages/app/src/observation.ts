// A new Observation from a form: the common vital signs and lab values, each with its LOINC code
// and UCUM unit, as a FHIR R4 resource the ledger stores encrypted like any other.

export interface Measure {
  loinc: string;
  name: string;
  unit: string;
  /** UCUM code of the unit. */
  ucum: string;
  category: "vital-signs" | "laboratory";
  min: number;
  max: number;
}

export const MEASURES: Measure[] = [
  { loinc: "8867-4", name: "Heart rate", unit: "/min", ucum: "/min", category: "vital-signs", min: 10, max: 300 },
  { loinc: "8480-6", name: "Systolic blood pressure", unit: "mmHg", ucum: "mm[Hg]", category: "vital-signs", min: 40, max: 300 },
  { loinc: "8462-4", name: "Diastolic blood pressure", unit: "mmHg", ucum: "mm[Hg]", category: "vital-signs", min: 20, max: 200 },
  { loinc: "8310-5", name: "Body temperature", unit: "°C", ucum: "Cel", category: "vital-signs", min: 25, max: 45 },
  { loinc: "9279-1", name: "Respiratory rate", unit: "/min", ucum: "/min", category: "vital-signs", min: 2, max: 80 },
  { loinc: "2708-6", name: "Oxygen saturation", unit: "%", ucum: "%", category: "vital-signs", min: 50, max: 100 },
  { loinc: "29463-7", name: "Body weight", unit: "kg", ucum: "kg", category: "vital-signs", min: 0.2, max: 500 },
  { loinc: "8302-2", name: "Body height", unit: "cm", ucum: "cm", category: "vital-signs", min: 20, max: 260 },
  { loinc: "4548-4", name: "Hemoglobin A1c", unit: "%", ucum: "%", category: "laboratory", min: 2, max: 20 },
  { loinc: "2339-0", name: "Glucose", unit: "mg/dL", ucum: "mg/dL", category: "laboratory", min: 10, max: 1500 },
  { loinc: "2093-3", name: "Cholesterol", unit: "mg/dL", ucum: "mg/dL", category: "laboratory", min: 20, max: 1000 },
];

/** The Observation of `value` of `measure` for `patient`, taken now. */
export function observation(patient: string, measure: Measure, value: number, note: string, now = new Date()): Record<string, unknown> {
  if (!Number.isFinite(value) || value < measure.min || value > measure.max) {
    throw new Error(`${measure.name} is between ${measure.min} and ${measure.max} ${measure.unit}`);
  }
  const resource: Record<string, unknown> = {
    resourceType: "Observation",
    status: "final",
    category: [
      {
        coding: [{ system: "http://terminology.hl7.org/CodeSystem/observation-category", code: measure.category }],
      },
    ],
    code: { coding: [{ system: "http://loinc.org", code: measure.loinc, display: measure.name }], text: measure.name },
    subject: { reference: `Patient/${patient}` },
    effectiveDateTime: now.toISOString(),
    valueQuantity: { value, unit: measure.unit, system: "http://unitsofmeasure.org", code: measure.ucum },
  };
  const text = note.trim();
  if (text) resource.note = [{ text: text.slice(0, 2000) }];
  return resource;
}
