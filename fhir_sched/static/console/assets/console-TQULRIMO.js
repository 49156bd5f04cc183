import{a as m,b as B,d as $,e as M,f as w}from"./chunk-46G6MOPN.js";import{a as g,b as n,c as y,d as C,e as v,f as _,g as O,h as d,i as j,j as u,k as f,l as D,m as S}from"./chunk-MVQF4VFS.js";import"./chunk-SQE76S5B.js";var H={booked:"booked",pending:"held",arrived:"arrived","checked-in":"arrived",fulfilled:"arrived",noshow:"noshow",waitlist:"waitlist",proposed:"held"},P={booked:"Booked",held:"Held",arrived:"Arrived",noshow:"No-show",waitlist:"Waitlist",blocked:"Blocked",flagged:"Flagged",offer:"Offer"};function J(c){return w(c,m+"booking-flag").length?"flagged":c.status==="pending"&&w(c,m+"waitlist-offer").length?"offer":H[c.status]||"booked"}async function q(c,e,t,i){if(!e.length)return[];let s=[],r=[];for(let o=0;o<e.length;o+=50)r.push(e.slice(o,o+50));let a=new Set(e);return await Promise.all(r.map(async o=>{let{resources:p,included:h}=await c.searchAll("Appointment",{actor:o.join(","),date:[`ge${f(t)}`,`lt${f(i)}`],status:"booked,pending,arrived,checked-in,fulfilled,noshow,proposed",_include:"Appointment:patient"});for(let l of p){if(!l.start)continue;let b=(l.participant||[]).map(k=>k.actor&&k.actor.reference).find(k=>k&&k.startsWith("Patient/")),X=b?$(h[b])||b:"";for(let k of l.participant||[]){let T=k.actor&&k.actor.reference;!T||!a.has(T)||s.push({key:`${l.id}|${T}`,id:l.id,appointment:l,resource:T,start:new Date(l.start),end:new Date(l.end||l.start),kind:J(l),label:X||l.description||"Appointment",patient:b})}}let{resources:x}=await c.searchAll("Schedule",{actor:o.join(",")});if(!x.length)return;let E={};for(let l of x)E[M(l)]=(l.actor||[]).map(b=>b.reference).filter(b=>a.has(b));let{resources:V}=await c.searchAll("Slot",{schedule:Object.keys(E).join(","),status:"busy-unavailable",start:`lt${f(i)}`,end:`gt${f(t)}`});for(let l of V)for(let b of E[l.schedule.reference]||[])s.push({key:`${l.id}|${b}`,id:l.id,slot:l,resource:b,start:new Date(l.start),end:new Date(l.end),kind:"blocked",label:l.comment||"Blocked"})})),s.sort((o,p)=>o.start-p.start||o.key.localeCompare(p.key)),s}var Y="https://fhir-sched.org/fhir/SubscriptionTopic/",Q="http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/",G=["appointment-booked","appointment-changed","appointment-cancelled","slot-freed","waitlist-offer"];function Z(c){return{resourceType:"Subscription",status:"requested",reason:"fhir-sched front-desk console: live calendar",criteria:Y+c,channel:{type:"websocket",payload:"application/fhir+json",_payload:{extension:[{url:`${Q}backport-payload-content`,valueCode:"id-only"}]}}}}function F(c,e){let t=(c.parameter||[]).find(i=>i.name===e);return t&&(t.valueString??t.valueUrl??t.valueUri??t.valueDateTime)}var A=class{constructor(e,t,i){this.fhir=e,this.onChange=t,this.onState=i||(()=>{}),this.ids=[],this.socket=null,this.stopped=!1}async subscriptions(){let e=[];for(let t of G)e.push((await this.fhir.post("Subscription",Z(t))).id);return e}async start(){this.ids=await this.subscriptions(),window.addEventListener("pagehide",()=>this.stop(!0)),await this.connect()}async connect(){if(this.stopped)return;let e=await Promise.all(this.ids.map(i=>this.fhir.get(`Subscription/${i}/$get-ws-binding-token`))),t=new WebSocket(F(e[0],"websocket-url"));this.socket=t,t.onopen=()=>{for(let i of e)t.send(`bind-with-token ${F(i,"token")}`);this.onState("live")},t.onmessage=i=>{let s=null;try{s=JSON.parse(i.data)}catch{return}let r=s&&(s.entry||[])[0]&&s.entry[0].resource;(r&&(r.type||(r.parameter||[]).find(o=>o.name==="type")?.valueCode))==="event-notification"&&this.onChange()},t.onclose=()=>{this.socket!==t||this.stopped||(this.onState("reconnecting"),setTimeout(()=>this.connect().catch(()=>this.onState("polling")),5e3))}}stop(e=!1){if(this.stopped=!0,this.socket&&this.socket.close(),!e)return;let t={};this.fhir.smart&&(t.authorization=`Bearer ${this.fhir.smart.state.tokenResponse.access_token}`);for(let i of this.ids)fetch(this.fhir.url(`Subscription/${i}`),{method:"DELETE",keepalive:!0,headers:t})}};var z=[["pat","Patient"],["prov","Provider"],["maint","Equipment maintenance"],["meds","Medication issue"],["other","Other"]],ee="http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",R=class extends y{static properties={fhir:{attribute:!1},entry:{attribute:!1},names:{attribute:!1},message:{state:!0},busy:{state:!0}};static styles=g`
    :host { display: block; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 0.75rem; }
    dt { font-weight: 600; }
    .actions { display: flex; flex-wrap: wrap; gap: 0.4rem; margin: 0.5rem 0; }
    button, select, input { font: inherit; padding: 4px 8px; cursor: pointer; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; }
    .message { padding: 6px; border-radius: 4px; background: #fff4dc; color: #3d2b00; }
    .message.ok { background: #e7f5ea; color: #123d1c; }
    .flag { color: #8b1c1c; }
  `;constructor(){super(),this.entry=null,this.names={},this.message=null,this.busy=!1}updated(e){let t=e.get("entry");e.has("entry")&&(t&&t.key)!==(this.entry&&this.entry.key)&&(this.message=null)}changed(){this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0}))}async run(e,t){this.busy=!0;try{await t(),this.message={ok:!0,text:e},this.changed()}catch(i){this.message={ok:!1,text:i.message}}finally{this.busy=!1}}status(e,t){let i=this.entry.appointment;return this.run(t,async()=>{let s=[{op:"replace",path:"/status",value:e}];this.entry={...this.entry,appointment:await this.fhir.patch(`Appointment/${i.id}`,s)}})}cancel(e){e.preventDefault();let t=new FormData(e.target),i=t.get("reason"),s=t.get("note"),r=this.entry.appointment,a={coding:[{system:ee,code:i,display:(z.find(o=>o[0]===i)||[])[1]}]};return s&&(a.text=s),this.run("Cancelled.",async()=>{this.entry={...this.entry,appointment:await this.fhir.patch(`Appointment/${r.id}`,[{op:"replace",path:"/status",value:"cancelled"},{op:"add",path:"/cancelationReason",value:a}])}})}unblock(){return this.run("Blocked time removed.",()=>this.fhir.request("DELETE",`Slot/${this.entry.slot.id}`))}reschedule(){this.dispatchEvent(new CustomEvent("fs-reschedule",{bubbles:!0,composed:!0,detail:this.entry.appointment}))}renderAppointment(e){let t=w(e,m+"booking-flag"),i=["booked","pending","arrived","checked-in"].includes(e.status);return n`
      <dl>
        <dt>When</dt><dd>${u(this.entry.start)}, ${d(this.entry.start)}–${d(this.entry.end)}</dd>
        <dt>Status</dt><dd>${e.status}</dd>
        <dt>Patient</dt><dd>${this.entry.label}</dd>
        <dt>With</dt><dd>${(e.participant||[]).map(s=>s.actor&&s.actor.reference).filter(s=>s&&!s.startsWith("Patient/")).map(s=>this.names[s]||s).join(", ")}</dd>
        ${t.length?n`<dt class="flag">Breaks</dt><dd class="flag">${t.map(s=>{let r=Object.fromEntries((s.extension||[]).map(a=>[a.url,a.valueCode||a.valueString]));return n`<div>${r.detail||r.rule}</div>`})}</dd>`:""}
      </dl>
      ${i?n`<div class="actions">
        <button ?disabled=${this.busy} @click=${()=>this.status("checked-in","Checked in.")}
          >Check in</button>
        <button ?disabled=${this.busy} @click=${()=>this.status("arrived","Arrived.")}
          >Arrived</button>
        <button ?disabled=${this.busy} @click=${()=>this.status("noshow","Marked no-show.")}
          >No-show</button>
        <button ?disabled=${this.busy} @click=${this.reschedule}>Reschedule</button>
      </div>
      <form @submit=${this.cancel}><fieldset><legend>Cancel this visit</legend>
        <label>Reason <select name="reason">${z.map(([s,r])=>n`<option value=${s}>${r}</option>`)}</select></label>
        <label>Note <input name="note" type="text"></label>
        <button type="submit" ?disabled=${this.busy}>Cancel visit</button>
      </fieldset></form>`:""}`}render(){let e=this.entry;return e?n`<h2>${P[e.kind]||e.kind}</h2>
      ${e.appointment?this.renderAppointment(e.appointment):n`
        <p>${u(e.start)}, ${d(e.start)}–${d(e.end)}: ${e.label}</p>
        <button ?disabled=${this.busy} @click=${this.unblock}>Remove blocked time</button>`}
      <div aria-live="polite">${this.message?n`<p class="message ${this.message.ok?"ok":""}" role=${this.message.ok?"status":"alert"}>${this.message.text}</p>`:""}</div>`:n`<p>Choose an entry in the calendar.</p>`}};customElements.define("fs-details",R);var te={any:null,morning:{repeat:{when:["MORN"]}},afternoon:{repeat:{when:["AFT"]}}},L=class extends y{static properties={fhir:{attribute:!1},visitTypes:{attribute:!1},practitioners:{attribute:!1},names:{attribute:!1},reschedule:{attribute:!1},options:{state:!0},patients:{state:!0},patient:{state:!0},message:{state:!0},busy:{state:!0}};static styles=g`
    form { display: grid; gap: 0.5rem; }
    label { display: grid; gap: 2px; font-weight: 600; }
    input, select, button { font: inherit; padding: 4px 6px; }
    .row { display: flex; gap: 0.5rem; flex-wrap: wrap; }
    ul { list-style: none; padding: 0; margin: 0.5rem 0; }
    li { display: flex; gap: 0.5rem; align-items: center; padding: 4px 0;
      border-bottom: 1px solid #ddd; flex-wrap: wrap; }
    li span { flex: 1 1 12rem; }
    .message { padding: 6px; border-radius: 4px; background: #fff4dc; color: #3d2b00; }
    .message.ok { background: #e7f5ea; color: #123d1c; }
    button.primary { background: #1e3a8a; color: #fff; border: 1px solid #1e3a8a;
      border-radius: 4px; }
    button { cursor: pointer; }
  `;constructor(){super(),this.visitTypes=[],this.practitioners=[],this.names={},this.options=[],this.patients=[],this.patient=null,this.reschedule=null,this.message=null,this.busy=!1}updated(e){if(e.has("reschedule")&&this.reschedule){let t=(this.reschedule.participant||[]).map(i=>i.actor&&i.actor.reference).find(i=>i&&i.startsWith("Patient/"));this.patient=t?{ref:t,name:t}:null}}async searchPatients(e){let t=e.target.value.trim();if(t.length<2){this.patients=[];return}let i=await this.fhir.get("Patient",{name:t,_count:10});this.patients=(i.entry||[]).map(s=>({ref:`Patient/${s.resource.id}`,name:$(s.resource),birthDate:s.resource.birthDate}))}async find(e){e.preventDefault();let t=new FormData(e.target),i=S(t.get("from")),s=v(S(t.get("to")),1),r=[{name:"start",valueDateTime:f(i)},{name:"end",valueDateTime:f(s)},{name:"_count",valueInteger:10}],a=t.get("visit");a&&r.push({name:"visit-type",valueString:a}),this.patient&&r.push({name:"patient-reference",valueReference:{reference:this.patient.ref}});let o=t.get("practitioner");o&&r.push({name:"practitioner",valueReference:{reference:o}});let p=te[t.get("timing")];p&&r.push({name:"timing",valueTiming:p}),this.busy=!0,this.message=null;try{let h=await this.fhir.post("Appointment/$find",{resourceType:"Parameters",parameter:r});this.options=(h.entry||[]).map(x=>x.resource).filter(x=>x&&x.resourceType==="Appointment"),this.options.length||(this.message={text:"No free time in that window.",ok:!1})}catch(h){this.options=[],this.message={text:h.message,ok:!1}}finally{this.busy=!1}}async act(e,t){let i=[{name:"appt-resource",resource:e}];t==="book"&&this.reschedule&&i.push({name:"cancelled-appt-id",valueReference:{reference:`Appointment/${this.reschedule.id}`}}),this.busy=!0;try{let r=((await this.fhir.post(`Appointment/$${t}`,{resourceType:"Parameters",parameter:i})).entry||[]).map(o=>o.resource).find(o=>o&&o.resourceType==="Appointment"),a=(r&&r.extension||[]).find(o=>o.url===m+"hold-expires");this.message={ok:!0,text:t==="hold"?`Held${a?` until ${d(new Date(a.valueInstant))}`:""}: book it from the calendar before then.`:this.reschedule?"Rescheduled.":"Booked."},this.options=[],this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0,detail:{appointment:r,operation:t}})),t==="book"&&this.reschedule&&(this.reschedule=null)}catch(s){this.message={text:`Not ${t==="hold"?"held":"booked"}: ${s.message}`,ok:!1}}finally{this.busy=!1}}actors(e){return(e.participant||[]).map(t=>t.actor&&t.actor.reference).filter(t=>t&&!t.startsWith("Patient/")).map(t=>this.names[t]||t).join(", ")}render(){let e=new Date;return n`<h2>${this.reschedule?"Reschedule":"Find free time"}</h2>
      ${this.reschedule?n`<p>Moving the visit of ${u(new Date(this.reschedule.start))}
        ${d(new Date(this.reschedule.start))}. <button type="button"
        @click=${()=>{this.reschedule=null}}>Stop rescheduling</button></p>`:""}
      <form @submit=${this.find}>
        <label>Visit type
          <select name="visit">
            <option value="">Any</option>
            ${this.visitTypes.map(t=>n`<option value=${t.token}>${t.label}</option>`)}
          </select></label>
        <label>Patient
          <input name="patient-search" type="search" autocomplete="off"
            placeholder="Family or given name" @input=${this.searchPatients}></label>
        ${this.patients.length?n`<ul aria-label="Patients found">${this.patients.map(t=>n`<li><span>${t.name} ${t.birthDate||""}</span><button type="button"
            @click=${()=>{this.patient=t,this.patients=[]}}>Choose ${t.name}</button>
            </li>`)}</ul>`:""}
        <p aria-live="polite">${this.patient?n`Patient: <strong>${this.patient.name}</strong>`:"No patient chosen"}</p>
        <label>Practitioner
          <select name="practitioner">
            <option value="">Any</option>
            ${this.practitioners.map(t=>n`<option value=${t.ref}>${t.name}</option>`)}
          </select></label>
        <div class="row">
          <label>From <input name="from" type="date" required value=${D(e)}></label>
          <label>To <input name="to" type="date" required value=${D(v(e,14))}>
          </label>
          <label>Time of day <select name="timing">
            <option value="any">Any</option><option value="morning">Morning</option>
            <option value="afternoon">Afternoon</option></select></label>
        </div>
        <button class="primary" type="submit" ?disabled=${this.busy}>Find</button>
      </form>
      <div aria-live="polite">${this.message?n`<p class="message ${this.message.ok?"ok":""}" role=${this.message.ok?"status":"alert"}>${this.message.text}</p>`:""}</div>
      <ul aria-label="Free times">${this.options.map(t=>n`<li>
        <span>${u(new Date(t.start))}, ${d(new Date(t.start))}–${d(new Date(t.end))}
          · ${this.actors(t)}</span>
        ${this.reschedule?"":n`<button type="button" ?disabled=${this.busy}
          @click=${()=>this.act(t,"hold")}>Hold ${d(new Date(t.start))}</button>`}
        <button type="button" class="primary" ?disabled=${this.busy}
          @click=${()=>this.act(t,"book")}>${this.reschedule?"Move here":"Book"}
          ${d(new Date(t.start))}</button></li>`)}</ul>`}};customElements.define("fs-find",L);var se=900*1e3,N=class extends y{static properties={view:{type:String},days:{attribute:!1},resources:{attribute:!1},entries:{attribute:!1},dayStart:{type:Number},dayEnd:{type:Number}};static styles=g`
    :host { display: block; overflow: auto; max-height: calc(100vh - 11rem); }
    table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 0.85rem; }
    th, td { border: 1px solid #c8ccd0; padding: 2px 3px; vertical-align: top; }
    thead th { position: sticky; top: 0; background: #eef1f4; z-index: 1; }
    th[scope="row"] { text-align: left; background: #f7f8f9; width: 11rem;
      position: sticky; left: 0; }
    td.slot { height: 1.6rem; }
    td.over { outline: 3px solid #1d4ed8; outline-offset: -3px; }
    .time { width: 4.5rem; }
    button.entry { display: block; width: 100%; text-align: left; margin: 1px 0;
      border: 1px solid #555; border-left-width: 6px; border-radius: 3px; padding: 1px 4px;
      font: inherit; cursor: pointer; background: #fff; color: #111; overflow: hidden;
      white-space: nowrap; text-overflow: ellipsis; position: relative; }
    button.entry:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 1px; }
    .booked { border-left-color: #1e6b2f; background: #e7f5ea; }
    .held { border-left-color: #8a5a00; background: #fff4dc; border-style: dashed; }
    .arrived { border-left-color: #0b4f8a; background: #e3effa; }
    .noshow { border-left-color: #8b1c1c; background: #fbe7e7; }
    .blocked { border-left-color: #444; background: repeating-linear-gradient(45deg, #eee,
      #eee 6px, #ddd 6px, #ddd 12px); }
    .flagged { border-left-color: #b00020; background: #ffe4ec; }
    .offer { border-left-color: #6b21a8; background: #f3e8ff; }
    .waitlist { border-left-color: #6b21a8; }
    .kind { font-weight: 600; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
      white-space: nowrap; }
    .empty { color: #555; font-style: italic; }
  `;constructor(){super(),this.view="week",this.days=[],this.resources=[],this.entries=[],this.dayStart=7,this.dayEnd=19}open(e){this.dispatchEvent(new CustomEvent("fs-open",{detail:e,bubbles:!0,composed:!0}))}entryButton(e,t){let i=`, until ${d(e.end)}, ${P[e.kind]||e.kind}`;return n`<button class="entry ${e.kind}" data-key=${e.key} draggable=${t?"true":"false"} title=${`${d(e.start)} ${e.label}${i}`} @click=${()=>this.open(e)}
      @dragstart=${s=>{s.dataTransfer.setData("text/plain",e.key),s.dataTransfer.effectAllowed="move"}}
      ><span class="kind">${d(e.start)}</span> ${e.label}<span class="sr">${i}</span
      ></button>`}renderWeek(){let e=new Map;for(let t of this.entries){let i=this.days.findIndex(r=>O(r,t.start));if(i<0)continue;let s=`${t.resource}|${i}`;e.has(s)||e.set(s,[]),e.get(s).push(t)}return n`<table aria-label="Week">
      <thead><tr><th scope="col">Resource</th>${this.days.map(t=>n`<th scope="col">${j(t)}</th>`)}</tr></thead>
      <tbody>${this.resources.map(t=>n`<tr><th scope="row">${t.name}</th>
        ${this.days.map((i,s)=>n`<td>${(e.get(`${t.ref}|${s}`)||[]).map(r=>this.entryButton(r,!1))}</td>`)}</tr>`)}</tbody></table>`}renderDay(){let e=this.days[0],t=[];for(let s=this.dayStart*4;s<this.dayEnd*4;s++)t.push(new Date(e.getFullYear(),e.getMonth(),e.getDate(),0,s*15));let i=new Map;for(let s of this.entries){if(!O(s.start,e))continue;let r=Math.max(0,Math.min(t.length-1,Math.floor((s.start-t[0])/se))),a=`${s.resource}|${r}`;i.has(a)||i.set(a,[]),i.get(a).push(s)}return n`<table aria-label="Day">
      <thead><tr><th scope="col" class="time">Time</th>${this.resources.map(s=>n`<th scope="col">${s.name}</th>`)}</tr></thead>
      <tbody>${t.map((s,r)=>n`<tr><th scope="row" class="time">${d(s)}</th>
        ${this.resources.map(a=>n`<td class="slot" data-resource=${a.ref}
          data-start=${s.toISOString()}
          @dragover=${o=>{o.preventDefault(),o.currentTarget.classList.add("over")}}
          @dragleave=${o=>o.currentTarget.classList.remove("over")}
          @drop=${o=>this.dropped(o,a.ref,s)}
          >${(i.get(`${a.ref}|${r}`)||[]).map(o=>this.entryButton(o,!!o.appointment))}</td>`)}</tr>`)}</tbody></table>`}dropped(e,t,i){e.preventDefault(),e.currentTarget.classList.remove("over");let s=e.dataTransfer.getData("text/plain"),r=this.entries.find(a=>a.key===s);!r||!r.appointment||this.dispatchEvent(new CustomEvent("fs-move",{bubbles:!0,composed:!0,detail:{entry:r,resource:t,start:i}}))}render(){return this.resources.length?this.view==="day"?this.renderDay():this.renderWeek():n`<p class="empty">Choose practitioners, rooms or devices to see their
        calendars.</p>`}};customElements.define("fs-grid",N);function U(c){return Array.from({length:7},(e,t)=>v(c,t))}var W=class extends y{static properties={fhir:{attribute:!1},entries:{state:!0},offers:{state:!0},message:{state:!0}};static styles=g`
    table { border-collapse: collapse; width: 100%; }
    th, td { border-bottom: 1px solid #ddd; padding: 4px; text-align: left; vertical-align: top; }
    button { font: inherit; padding: 3px 8px; cursor: pointer; }
    .message { padding: 6px; border-radius: 4px; background: #fff4dc; color: #3d2b00; }
    .message.ok { background: #e7f5ea; color: #123d1c; }
  `;constructor(){super(),this.entries=[],this.offers=[],this.message=null}async refresh(){let e=await this.fhir.searchAll("Appointment",{status:"waitlist",_include:"Appointment:patient"},1e3),t=await this.fhir.searchAll("Appointment",{status:"pending",_include:"Appointment:patient"},1e3),i={...e.included,...t.included},s=a=>(a.participant||[]).map(o=>o.actor&&o.actor.reference).find(o=>o&&o.startsWith("Patient/"));this.offers=t.resources.filter(a=>w(a,m+"waitlist-offer").length).map(a=>({appt:a,patient:$(i[s(a)])||s(a)||""}));let r=new Set(this.offers.map(a=>{let p=(w(a.appt,m+"waitlist-offer")[0].extension||[]).find(h=>h.url==="entry");return p&&p.valueReference&&p.valueReference.reference}));this.entries=e.resources.map(a=>({appt:a,patient:$(i[s(a)])||s(a)||"",offered:r.has(`Appointment/${a.id}`)}))}connectedCallback(){super.connectedCallback(),this.fhir&&this.refresh().catch(e=>{this.message={text:e.message}})}async act(e,t){try{await t(),this.message={ok:!0,text:e},await this.refresh(),this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0}))}catch(i){this.message={ok:!1,text:i.message}}}bookOffer(e){return this.act(`Booked ${e.patient}.`,()=>this.fhir.post(`Appointment/${e.appt.id}/$book`,{resourceType:"Parameters"}))}remove(e){return this.act(`${e.patient} is off the waitlist.`,()=>this.fhir.patch(`Appointment/${e.appt.id}`,[{op:"replace",path:"/status",value:"cancelled"}]))}wanted(e){return(e.requestedPeriod||[]).map(t=>`${t.start?u(new Date(t.start)):"any"} to ${t.end?u(new Date(t.end)):"any"}`).join("; ")||"any time"}render(){return n`<h2>Waitlist</h2>
      <div aria-live="polite">${this.message?n`<p class="message ${this.message.ok?"ok":""}" role=${this.message.ok?"status":"alert"}>${this.message.text}</p>`:""}</div>
      <h3>Live offers</h3>
      ${this.offers.length?n`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Offered time</th><th scope="col">Action</th></tr></thead><tbody>
        ${this.offers.map(e=>n`<tr><td>${e.patient}</td>
          <td>${u(new Date(e.appt.start))} ${d(new Date(e.appt.start))}</td>
          <td><button @click=${()=>this.bookOffer(e)}>Book offer for ${e.patient}</button>
          </td></tr>`)}</tbody></table>`:n`<p>No open offers.</p>`}
      <h3>Waiting</h3>
      ${this.entries.length?n`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Wants</th><th scope="col">Priority</th><th scope="col">Offer</th>
        <th scope="col">Action</th></tr></thead><tbody>
        ${this.entries.map(e=>n`<tr><td>${e.patient}</td><td>${this.wanted(e.appt)}</td>
          <td>${e.appt.priority??""}</td><td>${e.offered?"Offered":"—"}</td>
          <td><button @click=${()=>this.remove(e)}>Remove ${e.patient}</button></td></tr>`)}
        </tbody></table>`:n`<p>Nobody is waiting.</p>`}`}};customElements.define("fs-waitlist",W);var ie=3e3,ae=3e4,K=[["calendar","Calendar"],["find","Find & book"],["waitlist","Waitlist"],["kpis","KPIs"]],I=class extends y{static properties={fhir:{state:!0},error:{state:!0},tab:{state:!0},view:{state:!0},anchor:{state:!0},resources:{state:!0},chosen:{state:!0},entries:{state:!0},selected:{state:!0},visitTypes:{state:!0},contextPatient:{state:!0},reschedule:{state:!0},notice:{state:!0},live:{state:!0},loading:{state:!0}};static styles=g`
    :host { display: block; }
    header { display: flex; align-items: center; gap: 1rem; flex-wrap: wrap;
      padding: 0.5rem 1rem; background: #1e3a8a; color: #fff; }
    header h1 { font-size: 1.2rem; margin: 0; }
    nav ul { display: flex; gap: 0.25rem; list-style: none; margin: 0; padding: 0;
      flex-wrap: wrap; }
    nav button { font: inherit; padding: 6px 12px; border: 1px solid #fff; border-radius: 4px;
      background: transparent; color: #fff; cursor: pointer; }
    nav button[aria-current="page"] { background: #fff; color: #1e3a8a; font-weight: 700; }
    .who { margin-left: auto; }
    main { display: grid; grid-template-columns: minmax(13rem, 16rem) 1fr minmax(16rem, 22rem);
      gap: 0.75rem; padding: 0.75rem; }
    main.single { grid-template-columns: 1fr; max-width: 60rem; }
    @media (max-width: 1100px) {
      main { grid-template-columns: 1fr; }
    }
    .toolbar { display: flex; gap: 0.4rem; align-items: center; flex-wrap: wrap;
      margin-bottom: 0.5rem; }
    .toolbar h2 { font-size: 1rem; margin: 0 0.5rem 0 0; }
    button, select, input { font: inherit; padding: 4px 8px; }
    button { cursor: pointer; }
    button[aria-pressed="true"] { background: #1e3a8a; color: #fff; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; margin: 0 0 0.5rem 0; }
    fieldset label { display: block; padding: 2px 0; }
    .scroll { max-height: 50vh; overflow: auto; }
    .notice { padding: 6px; background: #e3effa; color: #0b2545; border-radius: 4px; }
    .error { padding: 1rem; background: #fbe7e7; color: #5c1010; }
    section { min-width: 0; }
    form.block { display: grid; gap: 0.3rem; }
    h2 { font-size: 1.1rem; }
  `;constructor(){super(),this.view=localStorage.getItem("fs-view")||"week",this.anchor=C(new Date),this.route(),this.resources=[],this.chosen=new Set(JSON.parse(localStorage.getItem("fs-chosen")||"[]")),this.entries=[],this.selected=null,this.visitTypes=[],this.contextPatient=null,this.reschedule=null,this.notice="",this.live="",this.loading=!1,this.since=null}async connectedCallback(){super.connectedCallback(),window.addEventListener("hashchange",()=>{let e=`${this.view}|${this.anchor}`;this.route(),this.fhir&&e!==`${this.view}|${this.anchor}`&&this.reload()});try{this.fhir=await B(),await Promise.all([this.loadResources(),this.loadVisitTypes()]),await this.takeLaunchContext(),await this.reload(),this.since=new Date().toISOString(),this.live="",this.startLive(),this.schedulePoll(),await this.updateComplete,window.fsReadyAt=performance.now(),document.body.dataset.ready="true"}catch(e){this.error=e.message||String(e)}}route(){let[e,t,i]=location.hash.replace(/^#/,"").split("/");this.tab=K.some(([s])=>s===e)?e:"calendar",t&&/^\d{4}-\d{2}-\d{2}$/.test(t)&&(this.anchor=S(t)),(i==="day"||i==="week")&&(this.view=i)}disconnectedCallback(){super.disconnectedCallback(),clearTimeout(this.poller),this.feed&&this.feed.stop()}async loadResources(){let{resources:e}=await this.fhir.searchAll("Schedule",{active:"true"}),t=new Map;for(let s of e)for(let r of s.actor||[]){let a=r.reference||"";/^(Practitioner|Location|Device|PractitionerRole)\//.test(a)&&(t.has(a)||t.set(a,{ref:a,name:r.display||"",schedule:s.id}))}for(let s of["Practitioner","Location"]){let r=[...t.keys()].filter(a=>a.startsWith(`${s}/`)).map(a=>a.split("/")[1]);for(let a=0;a<r.length;a+=100){let{resources:o}=await this.fhir.searchAll(s,{_id:r.slice(a,a+100).join(",")});for(let p of o)t.get(`${s}/${p.id}`).name=$(p)}}this.resources=[...t.values()].map(s=>({...s,name:s.name||s.ref})).sort((s,r)=>s.ref.split("/")[0].localeCompare(r.ref.split("/")[0])||s.name.localeCompare(r.name));let i=new Set(this.resources.map(s=>s.ref));this.chosen=new Set([...this.chosen].filter(s=>i.has(s))),this.chosen.size||(this.chosen=new Set(this.resources.filter(s=>s.ref.startsWith("Practitioner/")).slice(0,8).map(s=>s.ref)))}async takeLaunchContext(){let{patient:e,resources:t}=this.fhir.context,i=new Map(this.resources.map(a=>[a.ref,a])),s=new Map(this.resources.map(a=>[`Schedule/${a.schedule}`,a.ref])),r=t.map(a=>i.has(a)?a:s.get(a)).filter(Boolean);if(r.length&&(this.chosen=new Set(r)),e)try{this.contextPatient={ref:e,name:$(await this.fhir.get(e))}}catch{this.contextPatient={ref:e,name:e}}}async loadVisitTypes(){let{resources:e}=await this.fhir.searchAll("HealthcareService",{},1e3),t=[];for(let i of e)for(let s of w(i,m+"visit-type")){let r=(s.extension||[]).find(o=>o.url==="code"),a=r&&r.valueCoding;a&&t.push({token:a.system?`${a.system}|${a.code}`:a.code,label:`${a.display||a.code} (${i.name||i.id})`})}this.visitTypes=t}get days(){return this.view==="day"?[this.anchor]:U(_(this.anchor))}async reload(){let e=this.days;this.loading=!0;let t=performance.now(),i=t;try{this.entries=await q(this.fhir,[...this.chosen],e[0],v(e[e.length-1],1)),i=performance.now()}finally{this.loading=!1}this.updateComplete.then(async()=>{let s=this.shadowRoot.querySelector("fs-grid");s&&await s.updateComplete,(window.fsTimings=window.fsTimings||[]).push({fetch:i-t,render:performance.now()-i,entries:this.entries.length,resources:this.chosen.size})}),this.selected&&(this.selected=this.entries.find(s=>s.key===this.selected.key)||this.selected)}startLive(){this.socketUp=!1,this.feed=new A(this.fhir,()=>{window.fsNotifications=(window.fsNotifications||0)+1,this.changedElsewhere()},e=>{this.socketUp=e==="live",document.body.dataset.live=e}),this.feed.start().catch(()=>{this.socketUp=!1})}schedulePoll(){clearTimeout(this.poller),this.poller=setTimeout(async()=>{await this.poll(),this.schedulePoll()},this.socketUp?ae:ie)}async changedElsewhere(){if(this.refreshing){this.again=!0;return}this.refreshing=!0;try{do{this.again=!1,await this.reload();let e=this.shadowRoot.querySelector("fs-waitlist");e&&await e.refresh(),this.live=`Updated ${new Date().toLocaleTimeString()}`}while(this.again)}finally{this.refreshing=!1}}async poll(){if(!this.fhir||document.hidden)return;let e=this.since;this.since=new Date(Date.now()-2e3).toISOString();try{(await Promise.all(["Appointment","Slot"].map(i=>this.fhir.get(`${i}/_history`,{_since:e,_count:1})))).some(i=>(i.entry||[]).length)&&await this.changedElsewhere()}catch{this.since=e}}go(e){location.hash=e==="calendar"?`calendar/${D(this.anchor)}/${this.view}`:e,this.tab=e}setView(e){this.view=e,localStorage.setItem("fs-view",e),this.go("calendar"),this.reload()}shift(e){this.anchor=e===0?C(new Date):v(this.anchor,e*(this.view==="day"?1:7)),this.go("calendar"),this.reload()}toggle(e,t){let i=new Set(this.chosen);t?i.add(e):i.delete(e),this.chosen=i,localStorage.setItem("fs-chosen",JSON.stringify([...i])),this.reload()}async move(e){let{entry:t,resource:i,start:s}=e.detail,r=t.appointment,a=new Date(r.end)-new Date(r.start),o=new Date(s.getTime()+a),p={resourceType:"Appointment",status:"proposed",start:f(s),end:f(o),requestedPeriod:[{start:f(s),end:f(o)}],participant:(r.participant||[]).map(h=>h.actor&&h.actor.reference===t.resource?{...h,actor:{reference:i}}:h)};for(let h of["serviceType","appointmentType","specialty","reasonCode","description","supportingInformation","basedOn","priority","comment"])r[h]!==void 0&&(p[h]=r[h]);try{await this.fhir.post("Appointment/$book",{resourceType:"Parameters",parameter:[{name:"appt-resource",resource:p},{name:"cancelled-appt-id",valueReference:{reference:`Appointment/${r.id}`}}]}),this.notice=`Moved to ${u(s)} ${s.toLocaleTimeString([],{hour:"2-digit",minute:"2-digit"})}.`}catch(h){this.notice=`Not moved: ${h.message}`}await this.reload()}async block(e){e.preventDefault();let t=e.target,i=new FormData(t),s=this.resources.find(o=>o.ref===i.get("resource")),r=i.get("day"),a={resourceType:"Slot",schedule:{reference:`Schedule/${s.schedule}`},status:"busy-unavailable",start:f(S(r,i.get("from"))),end:f(S(r,i.get("to"))),comment:i.get("why")||"Blocked"};try{await this.fhir.post("Slot",a),this.notice=`Blocked ${s.name} on ${r}.`,t.reset()}catch(o){this.notice=`Not blocked: ${o.message}`}await this.reload()}renderCalendar(){let e=this.resources.filter(s=>this.chosen.has(s.ref)),t=this.days,i=this.view==="day"?u(t[0]):`${u(t[0])} – ${u(t[6])}`;return n`<main>
      <section aria-label="Calendars to show">
        <fieldset><legend>Calendars</legend><div class="scroll">
          ${this.resources.map(s=>n`<label><input type="checkbox"
            .checked=${this.chosen.has(s.ref)}
            @change=${r=>this.toggle(s.ref,r.target.checked)}> ${s.name}
            <small>(${s.ref.split("/")[0]})</small></label>`)}
        </div></fieldset>
        <form class="block" @submit=${this.block}><fieldset><legend>Block time</legend>
          <label>Calendar <select name="resource">${this.resources.map(s=>n`<option value=${s.ref}>${s.name}</option>`)}</select></label>
          <label>Day <input type="date" name="day" required value=${D(this.anchor)}></label>
          <label>From <input type="time" name="from" required value="12:00"></label>
          <label>To <input type="time" name="to" required value="13:00"></label>
          <label>Why <input type="text" name="why"></label>
          <button type="submit">Block</button></fieldset></form>
      </section>
      <section aria-label="Calendar">
        <div class="toolbar">
          <h2>${i}</h2>
          <button aria-pressed=${this.view==="day"} @click=${()=>this.setView("day")}>Day
          </button>
          <button aria-pressed=${this.view==="week"} @click=${()=>this.setView("week")}>Week
          </button>
          <button @click=${()=>this.shift(-1)} aria-label="Previous">‹</button>
          <button @click=${()=>this.shift(0)}>Today</button>
          <button @click=${()=>this.shift(1)} aria-label="Next">›</button>
          <span role="status" class=${this.notice?"notice":""}>${this.notice}</span>
          <span class="live" aria-hidden="true">${this.loading?"Loading…":this.live}</span>
        </div>
        <fs-grid .view=${this.view} .days=${t} .resources=${e} .entries=${this.entries}
          @fs-open=${s=>{this.selected=s.detail}} @fs-move=${this.move}></fs-grid>
      </section>
      <aside aria-label="Selected entry">
        <fs-details .fhir=${this.fhir} .entry=${this.selected}
          .names=${Object.fromEntries(this.resources.map(s=>[s.ref,s.name]))}
          @fs-changed=${()=>this.reload()}
          @fs-reschedule=${s=>{this.reschedule=s.detail,this.go("find")}}>
        </fs-details>
      </aside>
    </main>`}renderTab(){return this.tab==="find"?n`<main class="single"><fs-find .fhir=${this.fhir} .visitTypes=${this.visitTypes}
        .practitioners=${this.resources.filter(e=>e.ref.startsWith("Practitioner/"))}
        .names=${Object.fromEntries(this.resources.map(e=>[e.ref,e.name]))}
        .reschedule=${this.reschedule} .patient=${this.contextPatient} @fs-changed=${()=>{this.reschedule=null,this.reload()}}></fs-find></main>`:this.tab==="waitlist"?n`<main class="single"><fs-waitlist .fhir=${this.fhir}
        @fs-changed=${()=>this.reload()}></fs-waitlist></main>`:this.tab==="kpis"?(import("./chunk-O33GQJLN.js"),n`<main class="single"><fs-kpis .fhir=${this.fhir}
        .resources=${this.resources}></fs-kpis></main>`):this.renderCalendar()}render(){if(this.error)return n`<p class="error" role="alert">${this.error}</p>`;if(!this.fhir)return n`<p aria-live="polite">Signing in…</p>`;let e=this.fhir.user;return n`<header>
        <h1>fhir-sched front desk</h1>
        <nav aria-label="Sections"><ul>${K.map(([t,i])=>n`<li><button
          aria-current=${this.tab===t?"page":"false"} @click=${()=>this.go(t)}
          >${i}</button></li>`)}</ul></nav>
        ${this.contextPatient?n`<span>Patient: <strong>${this.contextPatient.name}</strong>
          </span>`:""}
        <span class="who">${e?`Signed in as ${e}`:"Auth off"}</span>
      </header>${this.renderTab()}`}};customElements.define("fs-console",I);
